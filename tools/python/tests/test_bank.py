"""A negotiating pair in the manner of graspy's Briggs and Gray, each ASA a
process of its own on its own graspd, the graspds in two namespaces."""

from conftest import Asa


def test_bank_and_borrower(pair, run_asa):
    a, b = pair
    bank: Asa = run_asa("bank.py", b)
    assert bank.proc.stdout.readline().strip() == "bank: ready"
    out = run_asa("borrower.py", a).result(timeout=90)
    print(out)
    # The bank's flood: value, loop count as sent (only relays count down), no
    # locator, a ttl.
    e, tagged = out["get_flood"]
    assert e == 0 and tagged, out
    assert tagged[0][0] == "the bank is open,"
    assert tagged[0][1] == 4 and tagged[0][2] is None and tagged[0][3] is True
    assert out["sync_ex1"] == [0, "the bank is open,"]
    assert out["sync_ex2"] == [0, [1, "two", 3]]
    assert out["sync_nonsense"] == 32  # notSynch
    assert out["discover"][0] == 0 and out["discover"][1] >= 1
    assert out["small"] == ["accepted", 80]
    assert out["small_bytes"] == ["accepted", 90]
    assert out["usd"] == ["declined", "Currency not accepted"]
    assert out["counter"] == ["we accepted", 150, False]
    assert out["waited"] == ["we accepted", 400, True]
    assert out["too_much"] == ["declined", "Недостаточно средств"]
    assert out["exhausted"] in (
        ["declined", "Loop count exhausted"],
        ["error", "Loop count exhausted"],
    ), out["exhausted"]
    assert out["concurrent"] == [["we accepted", (200 + 10 * i) // 2, False] for i in range(10)]
