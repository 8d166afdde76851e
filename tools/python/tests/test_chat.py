"""graspy's raw channel (req_negotiate with noloop, gsend, grecv) between a
client and a server in the manner of graspy's testclient/testserver."""


def test_chat_over_the_raw_channel(pair, run_asa):
    a, b = pair
    server = run_asa("chat_server.py", b)
    assert server.proc.stdout.readline().strip() == "chat: ready"
    out = run_asa("chat_client.py", a).result(timeout=60)
    assert out["discover"] == [0, 1]
    assert out["req_negotiate"] == [2, True, None]  # noReply, a session, nothing
    assert out["gsend"] == [0, 0, 0]
    assert out["replies"] == [[0, "hello"], [0, "b'\\x01\\x02'"], [0, {"k": [1, 2.5, None]}]]
    assert out["bytes_reply_is_bytes"] is True
    assert out["end"] == 0
    assert out["after_end"] == 19  # noSession
    # The server's grecv learns that the client went.
    line = server.proc.stdout.readline().strip()
    assert line.startswith("session ended:"), line
