"""Regenerate samples/pcap/: real captures of real traffic (tcpdump, dumpcap, a network
namespace with tc netem loss) and scapy-crafted edge cases (files named ``crafted_*``).

    sudo python3 samples/generate/pcap_samples.py [--only real|crafted]

Real captures need root (tcpdump/dumpcap on lo and on a veth pair inside a private network
namespace that this script creates and removes); nothing touches the host's interfaces.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "pcap"
TRAFFIC = HERE / "pcap_traffic.py"
NS, VETH_HOST, VETH_NS = "ssA", "vA", "vB"
HOST_IP, NS_IP = "10.231.0.1", "10.231.0.2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Capture:
    """tcpdump or dumpcap writing a file while traffic runs."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:  # both print a line on stderr once capturing
            line = self.proc.stderr.readline()
            if "listening on" in line or "Capturing on" in line or not line:
                break
        time.sleep(0.5)

    def stop(self) -> str:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=20)
        return err


def server(host: str, port: int, netns: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(TRAFFIC), "server", host, str(port)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd)
    time.sleep(0.5)
    return proc


def clients(host: str, port: int, scenarios: str, bulk: int = 0) -> None:
    subprocess.run([sys.executable, str(TRAFFIC), "clients", host, str(port), "--scenarios", scenarios,
                    "--bulk", str(bulk)], check=True)


def gzip_file(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return out


def real_samples() -> list[str]:
    notes = []
    srv4 = server("127.0.0.1", 47100)
    srv6 = server("::1", 47110)
    try:
        flt = "tcp portrange 47100-47112 or tcp port 47999"
        out = OUT / "lo_scenarios.pcap"
        cap = Capture(["tcpdump", "-i", "lo", "-U", "-w", str(out), flt])
        clients("127.0.0.1", 47100, "echo,slow,reset,refused,zero_window,port_reuse,syn_retry")
        clients("::1", 47110, "echo,reset")
        cap.stop()
        notes.append(f"- {gzip_file(out).name}: `tcpdump -i lo -U -w lo_scenarios.pcap '{flt}'`, then gzip -9; "
                     "IPv4 and IPv6 loopback, all scenarios of pcap_traffic.py")
        out = OUT / "any_sll2.pcap"
        cap = Capture(["tcpdump", "-i", "any", "-U", "-w", str(out), "tcp port 47100 or tcp port 47999"])
        clients("127.0.0.1", 47100, "echo,reset,port_reuse")
        cap.stop()
        notes.append("- any_sll2.pcap: `tcpdump -i any -U -w any_sll2.pcap 'tcp port 47100 or tcp port 47999'` "
                     "(LINUX_SLL2), scenarios echo, reset, port_reuse")
        out = OUT / "dumpcap_lo_any.pcapng"
        f2 = "tcp port 47100"
        cap = Capture(["dumpcap", "-q", "-i", "lo", "-f", f2, "-i", "any", "-f", f2, "-w", str(out)])
        clients("127.0.0.1", 47100, "echo,slow")
        cap.stop()
        notes.append(f"- dumpcap_lo_any.pcapng: `dumpcap -i lo -f '{f2}' -i any -f '{f2}' -w ...` — pcapng, two "
                     "interfaces with different link types (EN10MB for lo, LINUX_SLL for any: dumpcap picks SLL v1), every packet seen twice")
    finally:
        srv4.kill()
        srv6.kill()
    notes.append(netem_sample())
    return notes


def netem_sample() -> str:
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", VETH_HOST, check=False)
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
        sh("ip", "link", "set", VETH_HOST, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", VETH_NS)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", VETH_NS, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        for dev, prefix in ((VETH_HOST, []), (VETH_NS, ["ip", "netns", "exec", NS])):
            # MTU-sized segments on the wire (veth would otherwise carry 64 KB offloaded ones)
            sh(*prefix, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)
        loss = _inject_loss()
        srv = server(NS_IP, 47200, netns=NS)
        out = OUT / "netem_loss.pcap"
        try:
            cap = Capture(["tcpdump", "-i", VETH_HOST, "-s", "128", "-U", "-w", str(out), "tcp"])
            clients(NS_IP, 47200, "echo,slow,reset", bulk=3_000_000)
            cap.stop()
        finally:
            srv.kill()
        return (f"- {gzip_file(out).name}: veth pair {VETH_HOST}/{VETH_NS} into network namespace {NS}, "
                f"{loss}, "
                f"`tcpdump -i {VETH_HOST} -s 128 -U -w netem_loss.pcap tcp` (snaplen 128: payloads cut), "
                "then gzip -9; offloads off (`ethtool -K <veth> tso off gso off gro off`); scenarios echo, slow, "
                "reset and a 3 MB bulk upload + 1.5 MB download")
    finally:
        sh("ip", "link", "del", VETH_HOST, check=False)
        sh("ip", "netns", "del", NS, check=False)


NFT_RULES = """
table inet loss {
  chain in  { type filter hook input priority 0; meta l4proto tcp numgen random mod 40 == 0 drop; }
  chain out { type filter hook output priority 0; meta l4proto tcp numgen random mod 40 == 0 drop; }
}
"""


def _inject_loss() -> str:
    """2.5 % random TCP loss each way inside the namespace: tc netem when the kernel has it,
    else nftables' numgen (this machine's kernel is built without sch_netem)."""
    netem = ["netem", "loss", "2.5%"]
    if sh("ip", "netns", "exec", NS, "tc", "qdisc", "add", "dev", VETH_NS, "root", *netem, check=False).returncode == 0:
        sh("tc", "qdisc", "add", "dev", VETH_HOST, "root", *netem)
        return "`tc qdisc add dev <veth> root netem loss 2.5%` on both ends"
    subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], input=NFT_RULES, text=True, check=True)
    return ("sch_netem missing from the kernel, so 2.5 % random TCP loss each way by nftables inside the "
            "namespace (`meta l4proto tcp numgen random mod 40 == 0 drop` in input and output hooks: "
            "losses before and after the capture point)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["real", "crafted"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only != "crafted":
        if os.geteuid() != 0:
            sys.exit("real captures need root (tcpdump, network namespaces)")
        lines = real_samples()
        tool = sh("tcpdump", "--version").stdout.splitlines()[0]
        dump = sh("dumpcap", "--version").stdout.splitlines()[0]
        kernel = sh("uname", "-r").stdout.strip()
        (OUT / "PROVENANCE.md").write_text(
            "Produced by samples/generate/pcap_samples.py (traffic: samples/generate/pcap_traffic.py) on "
            f"{time.strftime('%Y-%m-%d')} (Linux {kernel}; {tool}; {dump}; LC_ALL=C).\n\n"
            "Real captures:\n" + "\n".join(lines) + "\n\n"
            "Crafted captures (`crafted_*`, written by samples/generate/pcap_crafted.py with scapy-built packets): "
            "layouts this machine's tools do not produce — see that script's docstring for each file.\n")
    if args.only != "real":
        subprocess.run([sys.executable, str(HERE / "pcap_crafted.py")], check=True)
