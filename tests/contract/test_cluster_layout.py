"""On a cluster, vendor channels spread over the shards while each channel's keys
(and all issuer keys) stay in one slot, so every transition is single-slot."""

from __future__ import annotations

from contract.factories import closure, new_channel_id, new_key, state, terms
from redis_servers import RedisCluster, command

from nanomoni.protocol.model import Mode
from nanomoni.store import open_issuer_store, open_vendor_store


async def test_channels_spread_over_masters_and_stay_single_slot(
    cluster_redis: RedisCluster,
) -> None:
    cluster_redis.flush()
    vendor = await open_vendor_store(cluster_redis.url)
    channels = [new_channel_id() for _ in range(30)]
    for cid in channels:
        await vendor.compare_and_set(cid, state(1), {7: bytes(32)})
    await vendor.close()
    per_node = [int(command(node.port, "DBSIZE")[1:]) for node in cluster_redis.nodes]
    assert sum(per_node) == 60  # a state HASH and a node HASH per channel
    assert all(count > 0 for count in per_node)
    port = cluster_redis.nodes[0].port
    for cid in channels[:5]:
        slots = {command(port, "CLUSTER", "KEYSLOT", f"{kind}:{{{cid}}}") for kind in "vn"}
        assert len(slots) == 1


async def test_issuer_keys_share_one_slot(cluster_redis: RedisCluster) -> None:
    cluster_redis.flush()
    issuer = await open_issuer_store(cluster_redis.url)
    client, vendor = new_key(), new_key()
    await issuer.register(client, 51)
    await issuer.register(vendor, 0)
    opened = [terms(client, vendor, 10, ttl_us=10**9) for _ in range(4)]
    opened.append(terms(client, vendor, 10, mode=Mode.signature, ttl_us=10**9))
    for channel in opened:
        await issuer.open_channel(channel)
    await issuer.client_close(opened[0].channel_id)
    await issuer.top_up(opened[-1].channel_id, 1, b"n" * 16, b"d" * 32)
    await issuer.settle(opened[1].channel_id, closure(3), final=False)
    await issuer.finalize_due(10)
    await issuer.close()
    per_node = [int(command(node.port, "DBSIZE")[1:]) for node in cluster_redis.nodes]
    # accounts, supply, roots, open keys, expiries, deadlines, the vendor's closing set,
    # 5 channels with their receipt lists and one top-up nonce set, all in one slot
    assert sorted(per_node) == [0, 0, 18]
