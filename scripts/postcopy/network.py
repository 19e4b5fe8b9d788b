"""Two network namespaces joined by a veth pair (pyroute2), netem on both ends when asked."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from typing import Any

from .common import DST_ADDR, PREFIX_LEN, SRC_ADDR, LabError


class Network:
    """Two namespaces, a veth pair between them, netem on both ends."""

    def __init__(self, prefix: str) -> None:
        from pyroute2 import IPRoute, netns  # noqa: F401  (imported here: the lab's only dependency)

        self.src, self.dst = f"{prefix}-src", f"{prefix}-dst"
        taken = sorted({self.src, self.dst} & set(netns.listnetns()))
        if taken:
            raise LabError(f"network namespace {taken[0]} already exists (another lab running? "
                           f"remove it with `ip netns del {taken[0]}` or choose --ns-prefix)")
        self.created: list[str] = []
        self.veth = (f"{prefix[:8]}-s", f"{prefix[:8]}-d")

    def __enter__(self) -> Network:
        from pyroute2 import IPRoute, netns

        try:
            for ns in (self.src, self.dst):
                netns.create(ns)
                self.created.append(ns)
            with IPRoute() as ipr:
                ipr.link("add", ifname=self.veth[0], kind="veth", peer=self.veth[1])
                for ifname, ns in zip(self.veth, (self.src, self.dst), strict=True):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], net_ns_fd=ns)
            for ifname, ns, addr in ((self.veth[0], self.src, SRC_ADDR), (self.veth[1], self.dst, DST_ADDR)):
                with IPRoute(netns=ns, flags=0) as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    ipr.addr("add", index=idx, address=addr, prefixlen=PREFIX_LEN)
                    ipr.link("set", index=idx, state="up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def shape(self, delay_ms: float, jitter_ms: float, loss_pct: float, rate_mbit: float | None) -> None:
        """netem on both veth ends: each direction is delayed by delay_ms."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if not (delay_ms or jitter_ms or loss_pct or rate_mbit):
            return
        opts: dict[str, Any] = {"delay": int(delay_ms * 1000), "jitter": int(jitter_ms * 1000), "loss": loss_pct,
                                "limit": 100000}
        if rate_mbit:
            opts["rate"] = f"{rate_mbit}mbit"
        subprocess.run(["modprobe", "-q", "sch_netem"], check=False)  # a module on Debian kernels
        for ifname, ns in zip(self.veth, (self.src, self.dst), strict=True):
            with IPRoute(netns=ns, flags=0) as ipr:  # flags=0: never create the namespace anew
                try:
                    ipr.tc("add", "netem", index=ipr.link_lookup(ifname=ifname)[0], handle="1:", **opts)
                except NetlinkError as exc:
                    why = "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)" if exc.code == errno.ENOENT \
                        else str(exc)
                    raise LabError(f"cannot shape the link: {why}") from exc

    def __exit__(self, *_exc: object) -> None:
        """Deleting a namespace deletes its veth end, the peer and the qdiscs with it."""
        from pyroute2 import netns

        for ns in reversed(self.created):
            with contextlib.suppress(OSError):
                netns.remove(ns)
        self.created.clear()


def in_namespace(ns: str, argv: list[str]) -> list[str]:
    """nsenter execs argv: the child's pid is the program's own."""
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]
