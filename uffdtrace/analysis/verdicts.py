"""The missing step of a hang, as one verdict per blocked thread: the words
`uffdtrace why` explains a hang in progress with (README, "uffdtrace why").

A thread waits in handle_userfault until its page is resolved and it is
woken, or in userfaultfd_event_wait_completion until its event is read. What
the kernel holds now says which step is missing: the message still queued,
read and not resolved, resolved (the page is there) and not woken; and
whether anyone is left who could take the step."""

from __future__ import annotations

NOT_READ = "not_read"
READ_NOT_RESOLVED = "read_not_resolved"
RESOLVED_NOT_WOKEN = "resolved_not_woken"
NO_READER = "no_reader"
EVENT_UNREAD = "event_unread"
UNKNOWN = "unknown"

MEANING = {
    NOT_READ: "its message is queued and no handler has read it",
    READ_NOT_RESOLVED: "a handler read its message and has not resolved the page",
    RESOLVED_NOT_WOKEN: "the page is there and the thread still sleeps: a resolution with DONTWAKE never "
                        "followed by UFFDIO_WAKE, or a lost wake-up",
    NO_READER: "nobody is left to take the next step",
    EVENT_UNREAD: "its non-cooperative event is queued and no handler has read it; until one does, every "
                  "UFFDIO_COPY/ZEROPAGE/CONTINUE/MOVE on the uffd fails with EAGAIN",
    UNKNOWN: "it is on none of the uffd's queues: woken just now, or its uffd was not found",
}
NOBODY_FREE = "no thread of a process holding the uffd is free: each sleeps in a userfaultfd wait"
READER_GONE = ("its message was read, and only its own process holds the uffd, with no thread waiting on it: the "
               "handler that read it has gone")


# The flags about a thread that still waits, and the step each says is missing.
RESOLVED_FLAGS = frozenset({"missed_wakeup", "dontwake_without_wake", "eexist_without_wake"})
WAITING_FLAGS = frozenset({"never_woken", "unread", "eagain_unretried", "aio_poll_stuck", *RESOLVED_FLAGS})


def of_flag(name: str, read: bool, present: bool) -> str | None:
    """The verdict of a flag `trace` raised on a waiting thread (None for the
    others): the same word `why` gives a hang it finds in progress."""
    if name in (NO_READER, EVENT_UNREAD):
        return name
    if name not in WAITING_FLAGS:
        return None
    if present or name in RESOLVED_FLAGS:
        return RESOLVED_NOT_WOKEN
    return READ_NOT_RESOLVED if read else NOT_READ


NO_HOLDER = ("no living process holds the uffd now: it is being released (which wakes its faults), or its holders "
             "are exiting")


def verdict(kind: str, message: str | None, page: str, can_read: bool | None, handled: bool) -> tuple[str, str]:
    """The verdict and what it means here.

    ``kind``: fault or event. ``message``: queued, read, or None (on no
    queue). ``page``: present, absent or unknown. ``can_read``: a thread of
    a holder is free (not itself asleep on a uffd); None when no holder with
    a living thread was found. ``handled``: a thread of a holder waits on
    this uffd (read, poll, epoll, aio), or a process other than the
    waiter's holds it."""
    name, why = _decide(kind, message, page, can_read, handled)
    return name, why or MEANING[name]


def _decide(kind: str, message: str | None, page: str, can_read: bool | None,
            handled: bool) -> tuple[str, str | None]:
    if message is None:
        found: tuple[str, str | None] = (UNKNOWN, None)
    elif kind == "event":
        found = (EVENT_UNREAD, None) if can_read is not False else (NO_READER, f"{MEANING[NO_READER]}: {NOBODY_FREE}")
    elif page == "present":
        found = (RESOLVED_NOT_WOKEN, None)
    elif can_read is None:
        found = (UNKNOWN, NO_HOLDER)
    elif not can_read:
        found = (NO_READER, f"{MEANING[NO_READER]}: {NOBODY_FREE}")
    elif message == "read" and not handled:
        found = (NO_READER, f"{MEANING[NO_READER]}: {READER_GONE}")
    else:
        found = (NOT_READ if message == "queued" else READ_NOT_RESOLVED, None)
    return found
