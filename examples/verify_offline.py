"""What a vendor checks, with `nanomoni.crypto` alone (no services): a PayWord token,
a PayTree proof, and a batch of signatures verified in one native call (SPEC §5, §10).

    python examples/verify_offline.py
"""

from __future__ import annotations

import os

from nanomoni import crypto


def payword() -> None:
    chain = crypto.PaywordChain(os.urandom(32), max_k=1000)  # the client's secret chain
    root = chain.root  # committed at open
    token = chain.token(42)  # payment k = 42
    assert crypto.verify_payword(token, 42, root)  # H^42(token) == root
    later = chain.token(50)  # payment k = 50: 8 hashes from the accepted token
    assert crypto.verify_payword(later, 50 - 42, token)
    print("payword: k=42 and k=50 verify against the root and each other")


def paytree() -> None:
    secrets = [os.urandom(32) for _ in range(64)]
    tree = crypto.MerkleTree.from_secrets(secrets, "blake3")  # leaf j = H(secret j)
    i = 17
    leaf = crypto.digest(secrets[i], "blake3")  # a payment reveals the secret
    assert crypto.verify_merkle(leaf, i, tree.proof(i), tree.root, tree.depth, "blake3")
    assert not crypto.verify_merkle(leaf, i + 1, tree.proof(i), tree.root, tree.depth, "blake3")
    print(f"paytree: leaf {i} of {tree.leaf_count} verifies at depth {tree.depth}")


def signatures() -> None:
    keys = [crypto.SigningKey.generate(kind) for kind in ("p256", "secp256k1", "ed25519")]
    items = []
    for n, key in enumerate(keys):
        message = f'{{"channel_id":"demo","cumulative_owed_amount":{n + 1}}}'.encode()
        items.append((key.public_key_der, message, key.sign(message)))
    items.append((keys[0].public_key_der, b"forged", items[0][2]))
    print("signatures:", crypto.verify_signatures(items))  # [True, True, True, False]


if __name__ == "__main__":
    payword()
    paytree()
    signatures()
