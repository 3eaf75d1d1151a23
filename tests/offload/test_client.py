"""The HTTPS client against a real hostile server: every failure is bounded and classified."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from edged.config.settings import OffloadSettings
from edged.offload.client import CloudClient, CloudError
from tests.helpers.broker import TlsMaterial
from tests.offload.conftest import TOKEN
from tests.offload.servers import HostileServer, TrickleServer

BODY = b'{"ref":"r1"}'


def client(
    server: HostileServer | TrickleServer, ca: Path, token: str = TOKEN, **settings: float
) -> CloudClient:
    values = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, **settings}
    return CloudClient(OffloadSettings(url=server.url, ca_file=ca, **values), token)  # type: ignore[arg-type]


def failure(call: object, *args: object) -> tuple[CloudError, float]:
    """The CloudError ``call(*args)`` raised and how long it took."""
    t0 = time.monotonic()
    with pytest.raises(CloudError) as info:
        call(*args)  # type: ignore[operator]
    return info.value, time.monotonic() - t0


class TestClient:
    """One request at a time: what each hostile behaviour turns into."""

    def test_a_good_answer_is_validated(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        c = client(hostile, tls_material.ca)
        assert c.health() > 0
        answer = c.detect(BODY, "r1", time.monotonic() + 5)
        assert answer.ref == "r1"
        assert answer.detections[0].label == "person"

    def test_an_answer_for_another_ref_is_refused(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        err, _ = failure(client(hostile, tls_material.ca).detect, BODY, "r2", time.monotonic() + 5)
        assert err.kind == "bad_response"

    def test_a_stall_ends_at_the_read_timeout_and_may_be_retried(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("stall")
        err, took = failure(
            client(hostile, tls_material.ca).detect, BODY, "r1", time.monotonic() + 9
        )
        assert err.kind == "timeout"
        assert err.retryable
        assert took < 1.0 + 1.5  # the read timeout, plus slack for a loaded machine

    def test_a_stall_never_outlives_the_deadline(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("stall")
        c = client(hostile, tls_material.ca, read_timeout_s=30)
        err, took = failure(c.detect, BODY, "r1", time.monotonic() + 0.6)
        assert err.kind == "timeout"
        assert took < 0.6 + 1.0  # the deadline, not the 30 s read timeout

    def test_a_50_mb_answer_is_cut_at_the_cap_in_bounded_time_and_memory(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("huge")
        c = client(hostile, tls_material.ca)
        tracemalloc.start()
        try:
            err, took = failure(c.detect, BODY, "r1", time.monotonic() + 5)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert err.kind == "too_large"
        assert not err.retryable
        assert took < 3.0
        assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 1 MiB cap"
        # The connection was dropped, not left half-read in the pool: the next request works.
        hostile.set_mode("ok")
        assert c.detect(BODY, "r1", time.monotonic() + 5).ref == "r1"

    def test_an_answer_with_100_kb_labels_is_refused_before_it_can_be_republished(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("long_labels")
        err, _ = failure(client(hostile, tls_material.ca).detect, BODY, "r1", time.monotonic() + 5)
        assert err.kind == "bad_response"
        assert not err.retryable
        assert "detections[0].label of 100000 characters (max 128)" in err.message

    def test_http_500_is_retryable(self, hostile: HostileServer, tls_material: TlsMaterial) -> None:
        hostile.set_mode("error500")
        err, _ = failure(client(hostile, tls_material.ca).detect, BODY, "r1", time.monotonic() + 5)
        assert err.kind == "http_500"
        assert err.retryable
        assert "boom" in err.message

    def test_a_wrong_token_is_not_retried_and_never_shown(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("unauthorized")
        err, _ = failure(client(hostile, tls_material.ca).health)
        assert err.kind == "http_401"
        assert not err.retryable
        assert "token_file" in err.message
        assert TOKEN not in str(err)

    def test_a_certificate_for_another_host_is_refused(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.set_mode("wrong_host")
        err, took = failure(client(hostile, tls_material.ca).health)
        assert err.kind == "tls"
        assert "127.0.0.1" in err.message or "match" in err.message
        assert not err.retryable
        assert took < 3.0

    def test_an_unknown_ca_is_refused(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        err, _ = failure(client(hostile, tls_material.other_ca).health)
        assert err.kind == "tls"
        assert "certificate verify failed" in err.message

    def test_nobody_listening_is_a_retryable_connect_error(
        self, hostile: HostileServer, tls_material: TlsMaterial
    ) -> None:
        hostile.close()
        err, took = failure(client(hostile, tls_material.ca).health)
        assert err.kind == "connect"
        assert err.retryable
        assert took < 3.0


class TestWholeExchangeDeadline:
    """A server trickling its answer a byte at a time never makes one read time out."""

    def test_trickled_headers_are_abandoned_at_the_request_deadline(
        self, tls_material: TlsMaterial
    ) -> None:
        server = TrickleServer(tls_material, "/v1/detect", interval_s=0.3).start()
        try:
            c = client(server, tls_material.ca)  # read timeout 1 s > 0.3 s between bytes
            err, took = failure(c.detect, BODY, "r1", time.monotonic() + 3.0)
            assert err.kind == "timeout"
            assert "deadline" in err.message
            assert abs(took - 3.0) <= 1.0, f"abandoned after {took:.1f} s, deadline 3 s"
            # The connection was shut, not left half-read: the server sees the hang-up.
            deadline = time.monotonic() + 3
            while server.hung_up == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.hung_up == 1
        finally:
            server.close()

    def test_a_trickled_health_probe_ends_at_its_deadline(self, tls_material: TlsMaterial) -> None:
        server = TrickleServer(tls_material, "/health", interval_s=0.3).start()
        try:
            # The probe's deadline is connect + read timeout: 2 s.
            err, took = failure(client(server, tls_material.ca).health)
            assert err.kind == "timeout"
            assert abs(took - 2.0) <= 1.0, f"probe abandoned after {took:.1f} s, deadline 2 s"
        finally:
            server.close()
