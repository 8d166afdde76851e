"""A raw-channel server in the manner of graspy's testserver (the tests'
own code): each request for EX.chat opens graspy's raw channel; it answers
every message with "you said ..." until the client goes.  Runs until
stopped; prints each session's end."""

import threading

import grasp

e, asa = grasp.register_asa("chat-server")
assert not e, grasp.etext[e]
chat = grasp.objective("EX.chat")
chat.neg = True
e = grasp.register_obj(asa, chat)
assert not e, grasp.etext[e]


def serve(s):
    while True:
        e, msg = grasp.grecv(asa, s, 10000)
        if e:
            print("session ended:", grasp.etext[e], flush=True)
            return
        e = grasp.gsend(asa, s, ["you said", msg])
        if e:
            print("gsend:", grasp.etext[e], flush=True)
            return


print("chat: ready", flush=True)
while True:
    e, s, req = grasp.listen_negotiate(asa, chat)
    assert not e, grasp.etext[e]
    threading.Thread(target=serve, args=(s,), daemon=True).start()
