"""One module per subcommand (cli.py gathers them); options.py holds what
several of them share."""
