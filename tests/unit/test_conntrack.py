"""netmend.conntrack on real `conntrack -L` output (fixtures/conntrack/capture.sh: flows made in a namespace);
malformed, truncated and empty output fail with the command and the line named."""

from pathlib import Path

import pytest

from netmend.conntrack import ConntrackError, Flow, Tuple, parse_conntrack, parse_proc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "conntrack"


def fixture(name):
    return (FIXTURES / name).read_text()


def listing(name):
    """A captured listing: stdout and stderr as conntrack printed them."""
    return fixture(f"{name}.txt"), fixture(f"{name}.stderr")


def line_of(text, needle):
    """The 1-based number of the line of text that contains needle (conntrack lists in hash order)."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def flows_by_sport(flows):
    return {(f.protocol, f.original.sport): f for f in flows}


def test_listing_of_kubernetes_like_flows():
    flows = parse_conntrack(*listing("conntrack-L"))
    assert len(flows) == 8
    by_sport = flows_by_sport(flows)
    # A pod's DNS query to the cluster DNS ClusterIP, DNATed to CoreDNS and answered.
    dns = by_sport[("udp", 43567)]
    assert dns.original == Tuple("10.244.1.2", "10.96.0.10", 43567, 53)
    assert dns.reply == Tuple("10.244.0.3", "10.244.1.2", 53, 43567)
    assert (dns.family, dns.protonum, dns.state, dns.flags, dns.mark, dns.use) == ("ipv4", 17, None, (), 0, 1)
    assert dns.dnat and not dns.snat and not dns.unreplied
    # The connection to the kubernetes Service, DNATed to the API server, held open, connmark 0x4000.
    api = by_sport[("tcp", 41000)]
    assert api == Flow(family="ipv4", protocol="tcp", protonum=6, timeout=431999, state="ESTABLISHED",
                       original=Tuple("10.244.1.2", "10.96.0.1", 41000, 443),
                       reply=Tuple("198.51.100.12", "10.244.1.2", 6443, 41000), flags=("ASSURED",), mark=16384,
                       zone=None, use=1, line=line_of(fixture("conntrack-L.txt"), "sport=41000"))
    assert api.assured and api.dnat
    assert (by_sport[("tcp", 41001)].state, by_sport[("tcp", 41001)].timeout) == ("TIME_WAIT", 119)
    syn = by_sport[("tcp", 42000)]
    assert (syn.state, syn.flags, syn.use) == ("SYN_SENT", ("UNREPLIED",), 2)
    assert syn.unreplied and not syn.dnat
    assert by_sport[("udp", 45000)].flags == ("UNREPLIED",)
    (icmp,) = [f for f in flows if f.protocol == "icmp"]
    assert (icmp.protonum, icmp.original.icmp, icmp.reply.icmp) == (1, (8, 0, 4660), (0, 0, 4660))
    assert icmp.original.sport is None and (icmp.original.src, icmp.original.dst) == ("10.244.1.2", "10.244.0.3")
    (v6,) = [f for f in flows if f.family == "ipv6"]
    assert v6.original == Tuple("::1", "::1", 46000, 5353)
    assert by_sport[("udp", 47000)].zone == 1
    assert by_sport[("udp", 43567)].zone is None


def test_extended_listing_is_the_same_flows():
    plain = parse_conntrack(*listing("conntrack-L"))
    extended = parse_conntrack(*listing("conntrack-L-extended"))
    assert [(f.original, f.reply, f.state, f.flags, f.family) for f in extended] == [
        (f.original, f.reply, f.state, f.flags, f.family) for f in plain]


def test_counters_and_ids():
    (flow,) = parse_conntrack(*listing("conntrack-L-acct-id"))
    assert flow.original == Tuple("10.244.1.2", "10.96.0.1", 41002, 443, packets=4, bytes=316)
    assert flow.reply == Tuple("198.51.100.12", "10.244.1.2", 6443, 41002, packets=3, bytes=166)
    assert (flow.id, flow.mark, flow.flags) == (1353454344, 16384, ("ASSURED",))


def test_ipv6_listing():
    (flow,) = parse_conntrack(*listing("conntrack-L-ipv6"))
    assert (flow.family, flow.protocol, flow.original.dport, flow.reply.sport) == ("ipv6", "udp", 5353, 5353)


def test_proc_nf_conntrack_matches_the_listing():
    proc = parse_proc(fixture("proc-net-nf_conntrack.txt"))
    plain = parse_conntrack(*listing("conntrack-L"))
    # The kernel prints IPv6 addresses in full; they come back compressed.
    assert sorted(repr((f.original, f.reply, f.state, f.flags)) for f in proc) == sorted(
        repr((f.original, f.reply, f.state, f.flags)) for f in plain)
    assert {f.zone for f in proc if f.original.sport != 47000} == {0}  # the kernel prints zone=0 too
    assert parse_proc("") == []


def test_an_empty_table_is_confirmed_by_the_summary_line():
    assert fixture("conntrack-L-none.txt") == ""
    assert parse_conntrack(*listing("conntrack-L-none")) == []
    merged = fixture("conntrack-L-none.txt") + fixture("conntrack-L-none.stderr")
    assert parse_conntrack(merged) == []


def test_stderr_merged_into_the_output_is_checked_too():
    text, stderr = listing("conntrack-L")
    assert len(parse_conntrack(text + stderr)) == 8


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_output_without_the_summary_is_an_error(text):
    with pytest.raises(ConntrackError, match=r"^conntrack -L: the output is empty and there is no 'N flow entries"):
        parse_conntrack(text)


def test_a_truncated_listing_disagrees_with_the_summary():
    text, stderr = listing("conntrack-L")
    cut = "".join(text.splitlines(keepends=True)[:5])
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack(cut, stderr)
    assert excinfo.value.problems == [("conntrack -L (stderr)", "conntrack reported 8 flow entries but the output "
                                       "has 5: it is truncated or merged from several listings")]


@pytest.mark.parametrize(("needle", "cut_at", "message"), [
    ("sport=46000", " use=1", "use= is missing"),
    ("sport=41000", " mark=16384", "use= is missing"),
    ("sport=41000", " dport=41000", "the reply tuple has no dport= (tcp flows print src= dst= sport="),
    ("sport=41000", " sport=6443", "the reply tuple has no sport= dport="),
    ("sport=41000", " dst=10.244.1.2 sport=6443", "the reply tuple has no dst="),
    ("sport=41000", " ESTABLISHED", "the tcp state (ESTABLISHED, TIME_WAIT, ...) is missing"),
    ("type=8", " type=0", "the reply tuple has no type= code= id= (icmp flows print src= dst= type= code= id=)"),
])
def test_a_line_cut_short_is_an_error(needle, cut_at, message):
    text, stderr = listing("conntrack-L")
    lines = text.splitlines()
    number = line_of(text, needle)
    line = lines[number - 1]
    broken = [*lines[: number - 1], line[: line.index(cut_at)], *lines[number:]]
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack("\n".join(broken) + "\n", stderr)
    assert str(excinfo.value).startswith(f"conntrack -L, line {number}: {message}"), str(excinfo.value)


def test_the_line_is_quoted_in_the_message():
    text = "tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.999 sport=41000 dport=443\n"
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack(text)
    assert str(excinfo.value) == ("conntrack -L, line 1: original dst='10.96.0.999' is not an IP address; the line: "
                                  "'tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.96.0.999 sport=41000 "
                                  "dport=443'")


REAL = fixture("conntrack-L.txt").splitlines()[line_of(fixture("conntrack-L.txt"), "sport=41000") - 1]  # to the API


@pytest.mark.parametrize(("line", "message"), [
    (REAL.replace("tcp      6", "tcp      six"), "the protocol number is 'six', not a number"),
    (REAL.replace("431999", "-1"), "the timeout is '-1', not a number"),
    (REAL.replace("ESTABLISHED ", ""), "the tcp state (ESTABLISHED, TIME_WAIT, ...) is missing"),
    (REAL.replace("sport=41000", "sport=70000"), "original sport=70000 is not a port (0-65535)"),
    (REAL.replace("dport=443", "dport=https"), "dport='https' is not a number"),
    (REAL.replace("mark=16384", "mark=0x4000"), "mark='0x4000' is not a number"),
    (REAL.replace(" use=1", " use=1 use=1"), "use= appears twice"),
    (REAL.replace("[ASSURED]", "ASSURED"), "'ASSURED' is not a key=value field of a flow"),
    (REAL.replace("src=198.51.100.12 ", ""), "the reply tuple (src= dst= ...) is missing"),
    (REAL.split(" src=")[0], "the original tuple (src= dst= ...) is missing"),
    ("    [NEW] " + REAL, "[NEW] starts an event line of `conntrack -E`"),
    ("ipv4     2 " + REAL.replace("10.244.1.2", "fd00::2"), "the addresses are ipv6, but the line says ipv4"),
    ("ipv4     10 " + REAL, "ipv4 is followed by '10', not its number 2"),
    ("udp      17 29 ESTABLISHED " + REAL.split("ESTABLISHED ")[1], "'ESTABLISHED' after the timeout: udp flows"),
    ("udp      17 29 src=10.244.1.2 dst=10.96.0.10 dport=53 src=10.244.0.3 dst=10.244.1.2 sport=53 dport=43567 use=1",
     "the original tuple has no sport= (udp flows print src= dst= sport= dport=)"),
    ("icmp     1 29 src=10.244.1.2 dst=10.244.0.3 type=8 code=0 src=10.244.0.3 dst=10.244.1.2 type=0 code=0 id=1 use=1",
     "the original tuple has no id= (icmp flows print src= dst= type= code= id=)"),
    ("Chain KUBE-SERVICES (2 references)", "'Chain' is not a protocol name"),
])
def test_malformed_lines_are_errors(line, message):
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack(line + "\n" + fixture("conntrack-L-acct-id.stderr"))
    ((where, text),) = excinfo.value.problems
    assert where == "conntrack -L, line 1"
    assert text.startswith(message), text


def test_every_bad_line_is_reported():
    text = fixture("conntrack-L.txt")
    broken = text.replace("dport=443 ", "dport= ").replace("src=::1", "src=::g", 1)
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack(broken, fixture("conntrack-L.stderr"), command="conntrack -L -o extended")
    assert [where for where, _ in excinfo.value.problems] == [
        f"conntrack -L -o extended, line {n}" for n in sorted(
            [line_of(text, "sport=41000"), line_of(text, "sport=41001"), line_of(text, "src=::1")])]


def test_stderr_of_a_failed_conntrack_is_an_error():
    stderr = "conntrack v1.4.7 (conntrack-tools): Operation failed: Permission denied\n"
    with pytest.raises(ConntrackError) as excinfo:
        parse_conntrack("", stderr)
    assert excinfo.value.problems == [("conntrack -L (stderr)", "has no 'N flow entries have been shown.' line, so the "
                                       "listing is not known to be complete; stderr: 'conntrack v1.4.7 "
                                       "(conntrack-tools): Operation failed: Permission denied'")]
    assert isinstance(excinfo.value, ValueError)


def test_output_must_be_text():
    with pytest.raises(ConntrackError, match="expected the command's output as text"):
        parse_conntrack(b"")
