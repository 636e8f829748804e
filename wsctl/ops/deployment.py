"""One deployment's Redis as operations see it: its registry store plus control-channel
requests to its instances.

:class:`~wsctl.registry.store.RegistryStore` is the registry's I/O and knows nothing of the
control channel (the registry sits below the protocol layer); operations that ask instances
something (``doctor``, ``drain``) take a :class:`Deployment`, which adds the requests, so an
operation still has one handle on the deployment and never reaches into its client.
"""

from __future__ import annotations

from wsctl.protocol.envelopes import Envelope, Reply
from wsctl.protocol.rpc import Unreachable, gather_requests, request
from wsctl.registry.store import RegistryStore

__all__ = ["Deployment"]


class Deployment(RegistryStore):
    """A :class:`RegistryStore` that also sends control-channel requests to the deployment's
    instances (through the process's reply inbox on the same client)."""

    async def request(self, instance_id: str, envelope: Envelope, timeout: float) -> Reply | None:
        """Send ``envelope`` on the instance's control channel and wait for its one reply.

        Returns None on timeout; raises :class:`~wsctl.protocol.rpc.Unreachable` when nobody
        listens on that channel (see :func:`wsctl.protocol.rpc.request`).
        """
        return await request(self.client, self.keys, instance_id, envelope, timeout)

    async def gather_requests(
        self, targets: list[tuple[str, Envelope]], timeout: float
    ) -> dict[str, Reply | Unreachable | None]:
        """Several control-channel requests at once; per instance its reply, None (timeout)
        or :class:`~wsctl.protocol.rpc.Unreachable`."""
        return await gather_requests(self.client, self.keys, targets, timeout)
