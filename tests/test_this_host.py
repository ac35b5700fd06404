"""minipar.cluster.this_host: a host's link as its ranks read it, and why one host's timings differ."""

from __future__ import annotations

import pytest

from minipar import cluster


def test_tcp_framing_is_wire_bytes_per_payload_byte_of_a_full_segment() -> None:
    assert cluster.tcp_framing(1500) == 1514 / 1448  # 14 B Ethernet + 20 B IP + 32 B TCP with timestamps
    assert cluster.tcp_framing(9000) == 9014 / 8948
    with pytest.raises(ValueError, match="MTU must exceed the 52 bytes of IP and TCP headers, got 40"):
        cluster.tcp_framing(40)


def test_a_device_this_namespace_lacks_reads_as_none() -> None:
    assert cluster.host_link("minipar-nodev0") is None


@pytest.mark.parametrize(("ranks", "cores", "says"), [
    (4, 2, "p = 4 ranks on 2 cores: the ranks queue for the CPU"),
    (2, 2, "p = 2 ranks on 2 cores: every core runs a rank, none is left over"),
])
def test_one_host_caveats_name_cores_vs_ranks_memcpy_and_the_load(ranks: int, cores: int, says: str) -> None:
    text = "\n".join(cluster.one_host_caveats(ranks, load_at_start=1.25, cores=cores))
    assert says in text
    assert "memcpy-bound transfers" in text
    assert f"load average at start: 1.25 over the last minute on {cores} cores (already busy" in text
    assert "idle" in "\n".join(cluster.one_host_caveats(ranks, load_at_start=0.1, cores=cores))


@pytest.mark.parametrize("ranks", [0, -1, 2.0, True, "2"])
def test_one_host_caveats_reject_a_bad_rank_count_naming_it(ranks: object) -> None:
    with pytest.raises(ValueError, match=f"ranks must be a positive int, got {ranks!r}"):
        cluster.one_host_caveats(ranks, load_at_start=0.0)  # type: ignore[arg-type]
