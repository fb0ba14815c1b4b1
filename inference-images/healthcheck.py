"""Container health check for polyvec images (Docker HEALTHCHECK, helm test).

    python healthcheck.py grpc [ADDRESS]   grpc.health.v1 Check on ADDRESS
                                          (default 127.0.0.1:$GRPC_PORT, GRPC_PORT default 50051);
                                          healthy only when the answer is SERVING
    python healthcheck.py http [URL]      GET URL (default http://127.0.0.1:$HTTP_PORT/healthz,
                                          HTTP_PORT default 8000); healthy on a 2xx answer

Exit status 0 when healthy, 1 when not (with the reason on stderr), 2 on bad usage.
Uses only what the images already install (grpcio + grpcio-health-checking, the
standard library), so no grpc_health_probe or curl binary is needed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # below the 5 s HEALTHCHECK --timeout of the images


def check_grpc(address: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def check_http(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback/cluster URL)
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("grpc", "http") or len(args) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "grpc":
        target = args[1] if len(args) == 2 else f"127.0.0.1:{os.environ.get('GRPC_PORT') or '50051'}"
        healthy, detail = check_grpc(target)
    else:
        port = os.environ.get("HTTP_PORT") or "8000"
        target = args[1] if len(args) == 2 else f"http://127.0.0.1:{port}/healthz"
        healthy, detail = check_http(target)
    print(("healthy: " if healthy else "unhealthy: ") + detail, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
