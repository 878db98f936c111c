"""The workers' true-up lines and the reservation header (`extproc.limits.trueup`)."""

from __future__ import annotations

import socket

from extproc.limits import trueup
from extproc.limits.limiter import Reservation, Settlement
from extproc.limits.model import Unit


def test_a_line_decodes_to_the_settlement_envoys_stream_done_call_made() -> None:
    lines = [trueup.line({"tenant": "acme", "model": "m", "priority": "batch"}, "tokens", "1500@1767225600123", "212"),
             trueup.line({"tenant": "acme"}, "usd", "30000@1767225600123", "0")]
    settlements, bad = trueup.decode(b"".join(lines))
    assert bad == 0
    assert settlements == [
        Settlement({"tenant": "acme", "model": "m", "priority": "batch"}, Unit.TOKENS,
                   Reservation(1500, 1767225600.123), 212),
        Settlement({"tenant": "acme"}, Unit.USD, Reservation(30000, 1767225600.123), 0)]


def test_lines_that_do_not_parse_are_counted() -> None:
    good = trueup.line({"tenant": "acme"}, "tokens", "5@6", "1")
    settlements, bad = trueup.decode(b"x\n\tm\t\ttokens\t5@6\t1\nacme\t\t\tbytes\t5@6\t1\nacme\t\t\ttokens\t5\t1\n"
                                     b"acme\t\t\ttokens\t5@6\t-1\n\xff\n" + good)
    assert (len(settlements), bad) == (1, 6)


def test_the_header_names_the_trued_up_units_only() -> None:
    value = trueup.header_value({Unit.REQUESTS: "1@2", Unit.TOKENS: "10@2", Unit.USD: "7@2"})
    assert value == "tokens=10@2;usd=7@2"
    assert trueup.parse_header(value) == {"tokens": "10@2", "usd": "7@2"}
    assert trueup.parse_header("requests=1@2;tokens=;junk;usd=3@4") == {"usd": "3@4"}


def test_the_sender_batches_a_turns_lines_into_datagrams_and_never_raises() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    sender = trueup.Sender("0.0.0.0", rx.getsockname()[1])  # a wildcard listen address: sent to loopback
    lines = [trueup.line({"tenant": f"t{i:04d}"}, "tokens", "1@2", "1") for i in range(1000)]
    sender.send(lines)  # no running loop: sent at once
    got = b""
    while len(got) < sum(map(len, lines)):
        datagram = rx.recv(65536)
        assert len(datagram) <= trueup.MAX_DATAGRAM and datagram.endswith(b"\n")
        got += datagram
    assert got == b"".join(lines) and (sender.sent, sender.dropped) == (1000, 0)
    rx.close()
    sender.close()
    gone = trueup.Sender("127.0.0.1", 9)
    gone.to = ("256.0.0.1", 9)  # an address no datagram can go to
    gone.send([lines[0]])
    assert (gone.sent, gone.dropped) == (0, 1)
