"""Bytes of weights one decode step reads, per GGUF: every tensor but the token embedding
(one row of which is read). Prints JSON {file: bytes}.

    python3 bytes_per_token.py A.gguf [B.gguf ...]
"""

import json
import sys

import gguf

out = {}
for path in sys.argv[1:]:
    r = gguf.GGUFReader(path)
    total = 0
    for t in r.tensors:
        n = int(t.n_bytes)
        if t.name == "token_embd.weight":
            n //= int(t.shape[-1])  # one row
        total += n
    out[path.rsplit("/", 1)[-1]] = total
print(json.dumps(out))
