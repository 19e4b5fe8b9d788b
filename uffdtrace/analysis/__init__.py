"""From records to verdicts: the facts about a fault (model), every flag
decision (rules), and the correlator that builds lifecycles (lifecycle)."""
