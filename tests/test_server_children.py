"""The server owns its children: a kill -9 of ``python -m benchmarks server`` ends its mlflow
server and the PostgreSQL it started, and removes its private folder; a restart ends what a dead server left serving before it
says "auth on"; a port that something else answers is refused, naming it; readiness is the
started server's own socket. Real PostgreSQL and mlflow servers (tests/team_server.py)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tracking import keeper, pg
from tests.helpers import run_cli
from tests.team_server import Server, end_mlflow_group, eventually, free_port, group, processes, serves

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(pg.installed() is not None, reason=f"needs PostgreSQL: {pg.installed()}")]
ADMIN = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "Adm1n-pw-q4W"}
# answers 200 to every GET, /health included, and asks for no password: an unauthenticated server
IMPOSTOR = """import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Answer).serve_forever()
"""


@pytest.fixture(scope="module")
def pg_dir(pg_cluster):
    """The run's one PostgreSQL (tests/conftest.py, started with ``pg start``)."""
    return pg_cluster.folder


def test_kill_9_of_the_server_command_ends_its_mlflow_server_and_its_postgresql(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="bpb-pg-"))
    base.chmod(0o755)
    own = base / "pg"                                  # a cluster this server starts, so it must stop it
    srv = Server(own, tmp_path).start()
    postmaster = int((own / "data" / "postmaster.pid").read_text().split()[0])
    private = Path(json.loads(keeper.pid_path(srv.port).read_text())["private"])    # where an auth config goes
    try:
        assert private.is_dir()
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=30)
        assert eventually(lambda: not group(srv.mlflow_pid) and postmaster not in processes()), (
            [processes().get(pid) for pid in group(srv.mlflow_pid)], postmaster in processes())
        assert not private.exists()
        assert not serves(srv.port)
        assert run_cli("pg", "status", "--pg-dir", str(own)).returncode == 3        # stopped
        assert "is gone; its keeper ended the mlflow server" in srv.log.read_text()
    finally:
        end_mlflow_group(srv.mlflow_pid)
        run_cli("pg", "stop", "--pg-dir", str(own))
        shutil.rmtree(base, ignore_errors=True)


def test_a_restart_ends_what_a_dead_server_left_serving_and_only_then_says_auth_on(pg_dir, tmp_path):
    """The server and its keeper both killed: the mlflow server's uvicorn child still serves
    the port without auth. A restart with --auth must end it, not take it for its own."""
    import requests
    first = Server(pg_dir, tmp_path / "first").start()
    keepers = [pid for pid, (ppid, _, cmd) in processes().items()
               if ppid == first.proc.pid and "tracking.keeper" in cmd]
    # Stopped, the mlflow process cannot act on the SIGTERM its parent's death sends it (it stays
    # pending), so its uvicorn child keeps serving: the orphan this test needs, every time.
    os.kill(first.mlflow_pid, signal.SIGSTOP)
    for pid in [*keepers, first.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    first.proc.wait(timeout=30)
    second = Server(pg_dir, tmp_path / "second", "--auth", env=ADMIN, port=first.port)
    try:
        assert requests.get(f"{first.url}/health", timeout=10).status_code == 200     # the orphan serves
        second.start()
        search = f"{second.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, timeout=30).status_code == 401
        assert requests.get(search, timeout=30, auth=("admin", ADMIN["MLFLOW_AUTH_ADMIN_PASSWORD"])).status_code == 200
        log = second.log.read_text()
        assert "auth on (admin admin)" in log
        assert "is gone; ended what it left running: the mlflow server" in log
        assert not group(first.mlflow_pid)
    finally:
        second.stop()
        end_mlflow_group(first.mlflow_pid)


def test_a_port_answered_by_another_program_is_refused_naming_it(pg_dir, tmp_path):
    port, script = free_port(), tmp_path / "impostor.py"
    script.write_text(IMPOSTOR)
    impostor = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        assert eventually(lambda: serves(port), 30)
        done = run_cli("server", "--auth", "--pg-dir", str(pg_dir), "--port", str(port), "--workers", "1",
                       "--artifacts-destination", str(tmp_path / "artifacts"), env=ADMIN, timeout=300)
        said = done.stdout + done.stderr
        assert done.returncode == 2, said
        holder = f"pid {impostor.pid} ({Path(sys.executable).name} {script} {port})"
        assert f"port {port} is already in use by {holder}, which this command did not start" in done.stderr
        assert "server ready" not in said and "auth on" not in said and "Traceback" not in said
    finally:
        impostor.kill()
        impostor.wait()


def test_readiness_is_the_started_servers_own_socket_not_whoever_answers(tmp_path):
    """Something else binds the port after the check at start: ``wait_ready`` names it."""
    from tracking.server import ServerError, wait_ready
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        try:
            with pytest.raises(ServerError, match=f"port {port} is answered by pid {os.getpid()} "):
                wait_ready(f"http://127.0.0.1:{port}", child, 20, port=port)
        finally:
            child.kill()
            child.wait()
