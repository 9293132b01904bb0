"""The cluster's state in Redis: live nodes (heartbeats with a TTL) and room placements.

Keys (one Redis, one database; every node of a cluster uses the same ``REDIS_URL``):

* ``parley:node:<nodeId>`` -- the node's :class:`NodeInfo` as JSON, ``PX`` :data:`NODE_TTL_MS`,
  rewritten every :data:`HEARTBEAT_SECONDS`: a node that dies (even SIGKILL) is gone from
  the registry within :data:`NODE_TTL_MS` of its last heartbeat (under 5 s).
* ``parley:nodes`` -- a set of node ids, to list the node keys (a member whose key expired
  is a dead node, pruned when listed).
* ``parley:room:<roomId>`` -- the id of the node that hosts the room, ``PX``
  :data:`PLACEMENT_TTL_MS`, kept alive by the owner's heartbeat while it hosts the room,
  deleted when the room closes there. A placement naming a node whose key is gone is
  void: the next join places the room again.
* ``parley:node-rooms:<nodeId>`` -- the summaries of the rooms the node hosts (JSON, for
  the cluster-wide ``GET /api/rooms``), written with its heartbeat, same TTL.
* ``parley:cluster-secret`` -- the relay key when neither ``CLUSTER_SECRET`` nor
  ``API_SECRET`` is set (dev clusters: whoever reaches Redis is trusted anyway).

Placing is one Lua script (atomic in Redis): two nodes racing on one new room get the
same owner; a node whose key says ``draining`` gets no new room. The scripts read node keys they are not given in ``KEYS``: fine for one
Redis server (not Redis Cluster, whose slots would need hash tags).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Final

from redis.asyncio import Redis

__all__ = [
    "HEARTBEAT_SECONDS",
    "NODE_TTL_MS",
    "PLACEMENT_TTL_MS",
    "NodeInfo",
    "NodeLoad",
    "Registry",
]

#: How often a node rewrites its key (and keeps its rooms' placements).
HEARTBEAT_SECONDS: Final = 1.0
#: A node key's lifetime: a dead node leaves the registry at most this long after its last beat.
NODE_TTL_MS: Final = 4000
#: A placement's lifetime without its owner's heartbeat (long enough for the owner to
#: create a room it was just handed; a placement of a dead node is void at once anyway).
PLACEMENT_TTL_MS: Final = 15000

#: A node whose last heartbeat is this old has missed one (see :meth:`Registry.evict`).
SILENT_MS: Final = 1500

PREFIX: Final = "parley:"

# KEYS[1] placement; ARGV: candidate node id, node key prefix, ttl ms, fallback node id
# (the caller: taken when the candidate left or drains since the caller last listed the
# nodes). Returns the owner: the live one the room has (draining or not: its rooms keep
# serving), else the first of candidate, fallback that is live and not draining, else
# nil (every node drains: no new room anywhere).
_PLACE: Final = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then
  return owner
end
for _, id in ipairs({ARGV[1], ARGV[4]}) do
  local info = redis.call('GET', ARGV[2] .. id)
  if info then
    local ok, node = pcall(cjson.decode, info)
    if ok and not node.draining then
      redis.call('SET', KEYS[1], id, 'PX', ARGV[3])
      return id
    end
  end
end
return false
"""

# KEYS: placements of the rooms a node hosts; ARGV: node id, ttl ms, node key prefix.
# Re-claims what is free (Redis restarted, placement expired) or held by a dead node;
# returns the keys another live node holds (the room is split: the caller logs it).
_KEEP: Final = """
local lost = {}
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if (not owner) or owner == ARGV[1] or redis.call('EXISTS', ARGV[3] .. owner) == 0 then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"""

# KEYS[1] node key; ARGV[1] a PTTL at or below which the node has missed a heartbeat.
# Deletes the key of a node seen dead (it refuses connections) once it is silent.
_EVICT: Final = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then
  return 1
end
if ttl <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS[1] placement; ARGV[1] node id: delete it only if that node still holds it.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class NodeLoad:
    """What a node carries: placement picks the node with the least."""

    rooms: int = 0
    peers: int = 0
    consumers: int = 0
    #: CPU of its mediasoup workers since the previous heartbeat, percent of one core (summed).
    worker_cpu: float = 0.0
    #: It has ``MAX_ROOMS`` rooms: no new room is placed on it.
    full: bool = False


@dataclass(frozen=True)
class NodeInfo:
    """One node as the registry holds it."""

    node_id: str
    url: str
    load: NodeLoad
    #: It drains (a graceful stop): its rooms keep serving, no new room goes there.
    draining: bool = False
    #: Its host's identity (the kernel's boot id, or ``CLUSTER_HOST_ID``).
    host: str | None = None
    #: Its Unix socket for socket handover (a node of the same ``host`` may pass it clients).
    handover: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "nodeId": self.node_id,
            "url": self.url,
            "load": asdict(self.load),
            "draining": self.draining,
        }
        if self.host is not None:
            data["host"] = self.host
        if self.handover is not None:
            data["handover"] = self.handover
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> NodeInfo:
        data: dict[str, Any] = json.loads(text)
        return cls(
            node_id=data["nodeId"],
            url=data["url"],
            load=NodeLoad(**data["load"]),
            draining=bool(data.get("draining", False)),
            host=data.get("host"),
            handover=data.get("handover"),
        )

    @property
    def placement_order(self) -> tuple[bool, bool, int, int, int, float, str]:
        """Least loaded first: not draining, not full, then fewest consumers, peers, rooms,
        worker CPU; ties by node id."""
        load = self.load
        return (self.draining, load.full, load.consumers, load.peers, load.rooms, load.worker_cpu, self.node_id)


class Registry:
    """The cluster's keys in one Redis (see the module doc); every call is one round trip."""

    def __init__(self, redis: Redis, prefix: str = PREFIX) -> None:
        self.redis = redis
        self.node_prefix = f"{prefix}node:"
        self.nodes_key = f"{prefix}nodes"
        self.room_prefix = f"{prefix}room:"
        self.secret_key = f"{prefix}cluster-secret"
        self.rooms_prefix = f"{prefix}node-rooms:"
        self._place = redis.register_script(_PLACE)
        self._keep = redis.register_script(_KEEP)
        self._release = redis.register_script(_RELEASE)
        self._evict = redis.register_script(_EVICT)

    def room_key(self, room_id: str) -> str:
        return self.room_prefix + room_id

    async def heartbeat(self, info: NodeInfo) -> None:
        """Write (or refresh) the node's key and list it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.node_prefix + info.node_id, info.to_json(), px=NODE_TTL_MS)
            pipe.sadd(self.nodes_key, info.node_id)
            await pipe.execute()

    async def leave(self, node_id: str) -> None:
        """Remove the node now (a graceful stop; a dead node's key just expires)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.node_prefix + node_id, self.rooms_prefix + node_id)
            pipe.srem(self.nodes_key, node_id)
            await pipe.execute()

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes, least loaded first (dead ones are pruned from the set)."""
        ids = sorted(str(member) for member in await self.redis.smembers(self.nodes_key))
        if not ids:
            return []
        values = await self.redis.mget([self.node_prefix + i for i in ids])
        dead = [i for i, value in zip(ids, values, strict=True) if value is None]
        if dead:
            await self.redis.srem(self.nodes_key, *dead)
        live = [NodeInfo.from_json(str(value)) for value in values if value is not None]
        return sorted(live, key=lambda node: node.placement_order)

    async def node(self, node_id: str) -> NodeInfo | None:
        value = await self.redis.get(self.node_prefix + node_id)
        return NodeInfo.from_json(str(value)) if value is not None else None

    async def place(self, room_id: str, candidate: str, fallback: str | None = None) -> str | None:
        """The room's owner: the live one it has, else ``candidate`` if it is live and not
        draining, else ``fallback`` (default ``candidate``) on the same terms, atomically;
        None when neither may take a new room."""
        args: list[str | int] = [candidate, self.node_prefix, PLACEMENT_TTL_MS, fallback or candidate]
        owner = await self._place(keys=[self.room_key(room_id)], args=args)
        return str(owner) if owner is not None else None

    async def owner(self, room_id: str) -> str | None:
        """The node the placement names (alive or not), None if the room is placed nowhere."""
        value = await self.redis.get(self.room_key(room_id))
        return str(value) if value is not None else None

    async def keep(self, node_id: str, room_ids: list[str]) -> list[str]:
        """Keep (or re-claim) the placements of the rooms ``node_id`` hosts; the ids of
        those another live node holds."""
        if not room_ids:
            return []
        keys = [self.room_key(room_id) for room_id in room_ids]
        lost = await self._keep(keys=keys, args=[node_id, PLACEMENT_TTL_MS, self.node_prefix])
        return [str(key).removeprefix(self.room_prefix) for key in lost]

    async def release(self, room_id: str, node_id: str) -> bool:
        """Forget the placement if ``node_id`` holds it (the room closed there)."""
        return bool(await self._release(keys=[self.room_key(room_id)], args=[node_id]))

    async def evict(self, node_id: str, silent_ms: int = SILENT_MS) -> bool:
        """Remove a node that refuses connections if it has not beaten for ``silent_ms``
        (True: it is gone from the registry; False: it beat recently, try again later)."""
        evicted = await self._evict(keys=[self.node_prefix + node_id], args=[NODE_TTL_MS - silent_ms])
        return bool(evicted)

    async def node_states(self) -> list[tuple[NodeInfo, int]]:
        """The live nodes with the age of their last heartbeat in ms (from the key's PTTL,
        Redis's clock: no clock of the nodes involved), in node id order."""
        ids = sorted(str(member) for member in await self.redis.smembers(self.nodes_key))
        async with self.redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.get(self.node_prefix + node_id)
                pipe.pttl(self.node_prefix + node_id)
            replies = await pipe.execute()
        states = []
        for value, ttl in zip(replies[::2], replies[1::2], strict=True):
            if value is not None and int(ttl) >= 0:
                states.append((NodeInfo.from_json(str(value)), max(0, NODE_TTL_MS - int(ttl))))
        return states

    async def publish_rooms(self, node_id: str, rooms: list[dict[str, Any]]) -> None:
        """The summaries of the rooms ``node_id`` hosts (for the cluster-wide room list),
        expiring with the node."""
        await self.redis.set(self.rooms_prefix + node_id, json.dumps(rooms), px=NODE_TTL_MS)

    async def rooms_of(self, node_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The room summaries each of ``node_ids`` published (a node that published none: [])."""
        if not node_ids:
            return {}
        values = await self.redis.mget([self.rooms_prefix + node_id for node_id in node_ids])
        return {
            node_id: json.loads(str(value)) if value is not None else []
            for node_id, value in zip(node_ids, values, strict=True)
        }

    async def shared_secret(self) -> str:
        """The cluster's relay key kept in Redis (the first node to ask creates it)."""
        await self.redis.set(self.secret_key, secrets.token_urlsafe(32), nx=True)
        value = await self.redis.get(self.secret_key)
        return str(value)
