"""A raw-channel client in the manner of graspy's testclient (the tests'
own code): req_negotiate with noloop, then gsend/grecv; prints one JSON line."""

import json

import grasp

e, asa = grasp.register_asa("chat-client")
assert not e, grasp.etext[e]
chat = grasp.objective("EX.chat")
chat.neg = True
chat.value = "Start"
e = grasp.register_obj(asa, chat)
assert not e, grasp.etext[e]
out = {}
e, peers = grasp.discover(asa, chat, 1000)
out["discover"] = [e, len(peers)]
e, s, nothing = grasp.req_negotiate(asa, chat, peers[0], None, noloop=True)
out["req_negotiate"] = [e, s is not None, nothing]
replies = []
for m in ["hello", b"\x01\x02", {"k": [1, 2.5, None]}]:
    out.setdefault("gsend", []).append(grasp.gsend(asa, s, m))
    replies.append(grasp.grecv(asa, s, 5000))
out["replies"] = [[e, r[1] if isinstance(r, list) else r] for e, r in replies]
out["bytes_reply_is_bytes"] = isinstance(replies[1][1][1], bytes)
out["end"] = grasp.end_negotiate(asa, s, True)
out["after_end"] = grasp.gsend(asa, s, "anyone?")
print(json.dumps(out, default=repr))
