# The board side of edgert: `edgert deploy` sends this file over SSH as `python3 -c <this file> COMMAND ...`, and
# the Ansible collection's modules import it (module_utils), so both do exactly the same on a board.
#
# Standard library only, and written so that even Python 2.7 parses it (no f-strings, no annotations): an old
# Python on the board must get a clear "too old" answer, not a SyntaxError. Each command returns a dict or raises
# AgentError; run as a script, it prints one JSON line.
#
# Layout under the remote directory:
#   venv/                           the runtime, made by `setup`
#   models/NAME/v-VERSION/          one unpacked bundle per version, every file checked against its manifest
#   models/NAME/current, previous   symlinks to versions, switched with rename(2), so never half-written
#   models/NAME/.incoming/          uploads in progress; whatever is left there by a dropped connection is cleared
#                                   by the next deploy
#   models/NAME/.last-check.json    the last health check a rollout ran on this board (agreement, p50)
import errno
import fcntl  # POSIX only, like the boards
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile

MIN_PYTHON = (3, 10)
CHUNK = 1 << 20


class AgentError(Exception):
    """A refusal or failure on the board: a kind (disk_full, checksum, ...) and one line that says what to do."""

    def __init__(self, kind, message, **fields):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.fields = fields


def fail(kind, message, **fields):
    raise AgentError(kind, message, **fields)


def python_too_old():
    """The one line for a Python older than edgert needs, or None."""
    if sys.version_info[:2] < MIN_PYTHON:
        return ("Python %d.%d.%d at %s is too old: edgert needs %d.%d or newer"
                % (tuple(sys.version_info[:3]) + (sys.executable,) + MIN_PYTHON))
    return None

# Names what is missing, so the deploy can say it in one line.
RUNTIME_CHECK = """
import importlib, sys
missing = []
for names in (("numpy",), ("click",), ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")):
    for name in names:
        try:
            importlib.import_module(name)
            break
        except ImportError:
            pass
    else:
        missing.append(" or ".join(n.split(".")[0] for n in names))
if missing:
    sys.exit("missing " + ", ".join(missing))
"""


def paths(root, name):
    root = os.path.abspath(os.path.expanduser(root))
    models = os.path.join(root, "models", name)
    return root, models


def free_bytes(path):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def version_of(link):
    try:
        return os.path.basename(os.readlink(link))[2:]
    except OSError:
        return None


def venv_python(root):
    return os.path.join(root, "venv", "bin", "python")


def runtime_python(root):
    """The venv's Python when `setup` made one, else the Python running this agent."""
    candidate = venv_python(root)
    return candidate if os.path.exists(candidate) else sys.executable


SERVE_CHECK = """
import importlib.util
missing = [n for n in ("uvicorn", "starlette", "prometheus_client") if importlib.util.find_spec(n) is None]
if missing:
    sys.exit("missing " + ", ".join(missing) + " (edgert serve)")
"""


def runtime_present(python):
    """Whether the runtime's packages are installed for `python`, found without importing them (a rollout's quick
    check before it switches; the health check that follows imports them for real)."""
    names = ("numpy", "click")
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import importlib.util

        missing = [n for n in names if importlib.util.find_spec(n) is None]
        if importlib.util.find_spec("ai_edge_litert") is None and importlib.util.find_spec("tflite_runtime") is None:
            missing.append("ai_edge_litert or tflite_runtime")
        return not missing, ("missing " + ", ".join(missing)) if missing else ""
    return runtime_status(python)


def runtime_status(python, serve=False):
    try:
        done = subprocess.run([python, "-c", RUNTIME_CHECK + (SERVE_CHECK if serve else "")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    lines = done.stderr.strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else ""


def symlink_atomic(target, link):
    tmp = "%s.%d.tmp" % (link, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, link)  # atomic on POSIX: readers see the old link or the new one, never none


def lock(models):
    os.makedirs(models, exist_ok=True)
    handle = open(os.path.join(models, ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fail("busy", "another deploy to %s is in progress; wait for it to finish" % models)
    return handle


def clear_incoming(models):
    incoming = os.path.join(models, ".incoming")
    if os.path.isdir(incoming):
        shutil.rmtree(incoming, ignore_errors=True)
    return incoming


def cmd_probe(root, name):
    root, models = paths(root, name)
    python = runtime_python(root)
    ok, why = runtime_status(python)
    return dict(python=list(sys.version_info[:3]), executable=sys.executable, machine=platform.machine(),
                root=root, free_bytes=free_bytes(root), runtime_python=python, runtime_ok=ok, runtime_error=why,
                venv=os.path.exists(venv_python(root)), current=version_of(os.path.join(models, "current")),
                previous=version_of(os.path.join(models, "previous")))


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unpacked(folder):
    """The first file of an unpacked bundle that does not match its manifest (or is missing), or None."""
    try:
        with open(os.path.join(folder, "manifest.json"), "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (IOError, OSError, ValueError):
        return "manifest.json"
    for rel, want in sorted(manifest["files"].items()):
        digest = hashlib.sha256()
        size = 0
        try:
            with open(os.path.join(folder, rel), "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    digest.update(block)
                    size += len(block)
        except (IOError, OSError):
            return rel
        if size != want["size"] or digest.hexdigest() != want["sha256"]:
            return rel
    return None


def io_failure(exc, models):
    """A failed write on the board as one line: a full disk, a read-only one, or the OS's own words."""
    if exc.errno == errno.ENOSPC:
        fail("disk_full", "the board ran out of disk space in %s while receiving the bundle; free some space "
             "or choose another --remote-dir (the active model was not touched)" % models)
    if exc.errno == errno.EROFS:
        fail("read_only", "%s is on a read-only file system; remount it read-write or choose another --remote-dir "
             "(the active model was not touched)" % models)
    if exc.errno == errno.EACCES:
        fail("permission", "%s is not writable by this user; fix its permissions or choose another --remote-dir "
             "(the active model was not touched)" % models)
    fail("io", "%s: %s (the active model was not touched)" % (getattr(exc, "filename", "") or models, exc))


def open_models(root, name):
    """The model's folder, created and locked; a read-only or unwritable remote directory is one line."""
    root, models = paths(root, name)
    try:
        return root, models, lock(models)
    except (IOError, OSError) as exc:
        io_failure(exc, models)


def unpack(models, version, archive_path):
    """Unpack a received bundle into v-VERSION (every file checked against the manifest first)."""
    incoming = os.path.join(models, ".incoming")
    unpacked = os.path.join(incoming, "%s.%d" % (version, os.getpid()))
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(unpacked)
        os.chmod(os.path.join(unpacked, "run"), 0o755)
        bad = check_unpacked(unpacked)
        if bad:
            fail("checksum", "%s does not match its checksum in the manifest after unpacking; the active model was "
                 "not touched, deploy again" % bad)
        final = os.path.join(models, "v-" + version)
        if os.path.isdir(final) and not check_unpacked(final):
            shutil.rmtree(unpacked)  # this version is on the board already (the one rolled back from, say)
        else:
            if os.path.isdir(final):
                shutil.rmtree(final)  # a damaged copy of this version: replaced by the one just checked
            os.rename(unpacked, final)
        fsync_dir(models)
    except (IOError, OSError) as exc:
        io_failure(exc, models)
    except zipfile.BadZipfile as exc:
        fail("checksum", "the bundle received is not a valid zip (%s); the active model was not touched, deploy "
             "again" % exc)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def activate(models, version):
    """Make v-VERSION current and what was current previous; returns (current, previous) as they were before."""
    before = version_of(os.path.join(models, "current"))
    previous = version_of(os.path.join(models, "previous"))
    if before != version:
        if before:
            symlink_atomic("v-" + before, os.path.join(models, "previous"))
        symlink_atomic("v-" + version, os.path.join(models, "current"))
        fsync_dir(models)
    return before, previous


def restore(models, current, previous):
    """Put the links back as `activate` found them (a version that failed its checks is removed)."""
    for link, version in (("current", current), ("previous", previous)):
        path = os.path.join(models, link)
        if version:
            symlink_atomic("v-" + version, path)
        elif os.path.lexists(path):
            os.unlink(path)
    fsync_dir(models)
    prune(models, set(v for v in (current, previous) if v))


def cmd_install(root, name, version, size, sha256):
    root, models, handle = open_models(root, name)
    size = int(size)
    incoming = clear_incoming(models)  # first: what a dropped upload left may be what fills the disk
    free = free_bytes(models)
    if free < 3 * size:  # the zip, the unpacked copy, and room to spare
        fail("disk_full", "not enough disk space in %s: %.1f MiB free, the bundle needs %.1f MiB; free some space or "
             "choose another --remote-dir" % (models, free / 2.0 ** 20, 3 * size / 2.0 ** 20))
    part = os.path.join(incoming, "%s.%d.zip" % (version, os.getpid()))
    try:
        os.makedirs(incoming)
        receive(part, size, sha256)
    except (IOError, OSError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)  # nothing half-received stays behind
        io_failure(exc, models)
    except AgentError:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    unpack(models, version, part)
    before, _ = activate(models, version)
    previous = version_of(os.path.join(models, "previous"))
    prune(models, set(v for v in (version, previous) if v))
    handle.close()
    return dict(version=version, previous=previous, switched=before != version,
                path=os.path.join(models, "current"))


def receive(part, size, sha256):
    """Read exactly `size` bytes from stdin into `part` (flushed to disk) and check their sha256."""
    received = 0
    digest = hashlib.sha256()
    source = sys.stdin.buffer
    with open(part, "wb") as out:
        while received < size:
            block = source.read1(min(CHUNK, size - received))  # what has arrived: progress is visible
            if not block:
                break
            out.write(block)
            digest.update(block)
            received += len(block)
        out.flush()
        os.fsync(out.fileno())
    if received < size:
        fail("interrupted", "the upload stopped after %d of %d bytes; the active model was not touched, "
             "deploy again" % (received, size))
    if digest.hexdigest() != sha256:
        fail("checksum", "checksum mismatch after upload (sent %s..., received %s...); the active model was "
             "not touched, deploy again" % (sha256[:12], digest.hexdigest()[:12]))


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(models, keep):
    for entry in os.listdir(models):
        if entry.startswith("v-") and entry[2:] not in keep:
            shutil.rmtree(os.path.join(models, entry), ignore_errors=True)


def cmd_rollback(root, name):
    root, models = paths(root, name)
    if not os.path.isdir(models):
        fail("not_deployed", "%s is not deployed under %s; nothing to roll back" % (name, root))
    handle = lock(models)
    current = version_of(os.path.join(models, "current"))
    previous = version_of(os.path.join(models, "previous"))
    if not previous or not os.path.isdir(os.path.join(models, "v-" + previous)):
        fail("no_previous", "%s has no previous version on the board to roll back to (active: %s)"
             % (name, current or "none"))
    bad = check_unpacked(os.path.join(models, "v-" + previous))
    if bad:
        fail("checksum", "the previous version's %s does not match its manifest; not rolling back" % bad)
    symlink_atomic("v-" + previous, os.path.join(models, "current"))
    if current:
        symlink_atomic("v-" + current, os.path.join(models, "previous"))
    fsync_dir(models)
    handle.close()
    return dict(version=previous, replaced=current, path=os.path.join(models, "current"))


def cmd_setup(root, index_url, *requirements):
    root, _ = paths(root, "_")
    python = venv_python(root)
    machine = os.environ.get("EDGERT_MACHINE") or platform.machine()
    if machine in ("armv7l", "armv6l", "armv8l") and any(r.lower().startswith("ai-edge-litert") for r in requirements):
        fail("no_wheel", "ai-edge-litert has no wheel for %s (32-bit ARM); install a 64-bit OS on the board (e.g. "
             "Raspberry Pi OS 64-bit), or install tflite-runtime with numpy<2 there (pip install tflite-runtime "
             "'numpy<2'; edgert uses it) and deploy without --setup" % machine, machine=machine)
    serve = any(r.startswith("uvicorn") for r in requirements)
    ok, why = runtime_status(python, serve) if os.path.exists(python) else (False, "no virtual environment yet")
    if ok:
        return dict(installed=False, python=python)
    if not os.path.exists(python):
        made = subprocess.run([sys.executable, "-m", "venv", os.path.join(root, "venv")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)
        if made.returncode != 0:
            tail = made.stdout.strip().splitlines()[-1:] or [""]
            hint = "install python3-venv (sudo apt install python3-venv)" if "ensurepip" in made.stdout \
                else "check the Python installation"
            shutil.rmtree(os.path.join(root, "venv"), ignore_errors=True)
            fail("setup", "could not create a virtual environment with %s (%s); %s"
                 % (sys.executable, tail[0], hint))
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    if index_url != "-":
        command += ["--extra-index-url", index_url]
    done = subprocess.run(command + list(requirements), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if done.returncode != 0:
        lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
        fail("setup", "pip could not install %s on the board: %s" % (" ".join(requirements),
                                                                     lines[-1] if lines else "no output"))
    ok, why = runtime_status(python, serve)
    if not ok:
        fail("setup", "the runtime was installed but does not import: %s" % why)
    return dict(installed=True, python=python, requirements=list(requirements), reason=why)


def cmd_exec(root, name, *args):
    """Run the active bundle (`run`, `bench`, `verify`, ...) with the board's runtime Python; its output is ours."""
    root, models = paths(root, name)
    current = os.path.join(models, "current")
    if not os.path.isdir(current):
        fail("not_deployed", "%s is not deployed under %s; run edgert deploy first" % (name, root))
    python = runtime_python(root)
    os.execv(python, [python, current] + list(args))


UNIT = """[Unit]
Description=edgert serve: the models in %(root)s over HTTP
After=network-online.target
Wants=network-online.target

[Service]
Environment=%(environment)s
ExecStart=%(command)s
Restart=on-failure
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=%(stop)d

[Install]
WantedBy=%(wanted)s
"""


def systemd_quote(text, variables=True):
    """One word of a unit file, as systemd.service(5) reads it: quoted, with `%` (specifiers) and, in ExecStart
    (`variables`), `$` taken literally, so that a folder named `my models` or `100%` stays one argument."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"%s"' % (escaped.replace("$", "$$") if variables else escaped)


def unit_text(root, code, argv, grace, scope):
    """The edgert-serve.service unit that runs `argv` with edgert's own code (`code`) first on the path."""
    return UNIT % dict(root=root.replace("%", "%%"),
                       environment=systemd_quote("PYTHONPATH=" + code, variables=False),
                       command=" ".join(systemd_quote(a) for a in argv), stop=int(float(grace)) + 5,
                       wanted="multi-user.target" if scope == "system" else "default.target")


def systemd_scope():
    """'system' as root, 'user' otherwise, or None with the reason when systemd does not run here."""
    if not os.path.isdir("/run/systemd/system"):
        return None, "systemd is not running here"
    if not shutil.which("systemctl"):
        return None, "no systemctl"
    if os.geteuid() == 0:
        return "system", ""
    done = subprocess.run(["systemctl", "--user", "show-environment"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    if done.returncode != 0:
        return None, "no systemd user instance (%s)" % (done.stdout.strip().splitlines() or [""])[-1]
    return "user", ""


def pid_alive(pid_file):
    try:
        pid = int(open(pid_file).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_process(pid_file, grace):
    """End the server this agent started earlier (by its recorded id), waiting for it to drain."""
    import signal
    import time

    pid = pid_alive(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + grace + 5
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def wait_live(port, log_file, seconds):
    import time
    try:
        from urllib.request import urlopen
    except ImportError:  # pragma: no cover - Python 2 parses this file, never runs it this far
        from urllib2 import urlopen
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urlopen("http://127.0.0.1:%s/v2/health/live" % port, timeout=2).read()
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)
    return False


def cmd_serve(root, name, host, port, grace, *options):
    """Run `edgert serve --repository ROOT` on the board: a systemd unit (system unit as root, user unit otherwise)
    where systemd runs, else a background process recorded in ROOT/server/serve.pid. Started again if running."""
    root, models = paths(root, name)
    version = os.path.realpath(os.path.join(models, "current"))
    if not os.path.isdir(version):
        fail("not_deployed", "%s is not deployed under %s; run edgert deploy first" % (name, root))
    python = runtime_python(root)
    ok, why = runtime_status(python, serve=True)
    if not ok:
        fail("runtime_missing", "the board's runtime cannot serve (%s); deploy with --setup --serve" % why)
    # edgert's own code, from the bundle just deployed, copied where no later deploy or prune removes it
    server = os.path.join(root, "server")
    code = os.path.join(server, "lib")
    fresh = code + ".%d.tmp" % os.getpid()
    shutil.rmtree(fresh, ignore_errors=True)
    os.makedirs(fresh)
    for entry in os.listdir(version):
        if entry == "edgert" or entry.endswith(".dist-info"):
            shutil.copytree(os.path.join(version, entry), os.path.join(fresh, entry))
    if os.path.isdir(code):
        old = code + ".%d.old" % os.getpid()
        os.rename(code, old)
        os.rename(fresh, code)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(fresh, code)
    argv = [python, "-m", "edgert", "serve", "--repository", root, "--host", host, "--port", port,
            "--grace", grace] + list(options)
    scope, why_not = systemd_scope()
    log_file = os.path.join(server, "serve.log")
    pid_file = os.path.join(server, "serve.pid")
    if scope is not None:
        unit_dir = "/etc/systemd/system" if scope == "system" else os.path.expanduser("~/.config/systemd/user")
        if not os.path.isdir(unit_dir):
            os.makedirs(unit_dir)
        unit = os.path.join(unit_dir, "edgert-serve.service")
        with open(unit + ".tmp", "w") as f:
            f.write(unit_text(root, code, argv, grace, scope))
        os.rename(unit + ".tmp", unit)
        ctl = ["systemctl"] + ([] if scope == "system" else ["--user"])
        for step in (["daemon-reload"], ["enable", "edgert-serve.service"], ["restart", "edgert-serve.service"]):
            done = subprocess.run(ctl + step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True)
            if done.returncode != 0:
                fail("serve", "systemctl %s failed: %s" % (" ".join(step), done.stdout.strip()[-300:]))
        how, where = "systemd %s unit" % scope, unit
    else:
        stop_process(pid_file, float(grace))
        env = dict(os.environ, PYTHONPATH=code)
        with open(log_file, "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, close_fds=True, start_new_session=True)
        with open(pid_file + ".tmp", "w") as f:
            f.write("%d\n" % process.pid)
        os.rename(pid_file + ".tmp", pid_file)
        how, where = "background process %d (%s)" % (process.pid, why_not), pid_file
    if not wait_live(port, log_file, 60):
        tail = ""
        if os.path.exists(log_file):
            tail = open(log_file).read().strip().splitlines()[-1:]
            tail = tail[0] if tail else ""
        fail("serve", "edgert serve did not answer on port %s within 60 s%s" % (port, ": " + tail if tail else ""))
    return dict(how=how, where=where, log=log_file if scope is None else "journalctl %s-u edgert-serve"
          % ("" if scope == "system" else "--user "), url="http://%s:%s/v2" % (host, port))


def cmd_unserve(root, grace):
    """Stop the server `cmd_serve` started (its unit is stopped and disabled, or its process ended by id)."""
    root, _ = paths(root, "_")
    scope, _why = systemd_scope()
    stopped = False
    if scope is not None:
        ctl = ["systemctl"] + ([] if scope == "system" else ["--user"])
        done = subprocess.run(ctl + ["disable", "--now", "edgert-serve.service"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)
        stopped = done.returncode == 0
    stopped = stop_process(os.path.join(root, "server", "serve.pid"), float(grace)) or stopped
    return dict(stopped=stopped)


def sysfs(path):
    """`path` under EDGERT_SYSFS_ROOT (default /), as the runtime reads sysfs, so tests can stand in for a board."""
    return os.path.join(os.environ.get("EDGERT_SYSFS_ROOT", "/"), path.lstrip("/"))


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def thermal_state():
    """(hottest zone in degrees C or None, {zone: C}, throttled, why): the Raspberry Pi firmware's throttling flags
    where it reports them, and any thermal zone at or above its lowest passive/hot trip point."""
    import glob

    temps, throttled, why = {}, False, ""
    for zone in sorted(glob.glob(sysfs("/sys/class/thermal/thermal_zone*"))):
        raw = read_text(os.path.join(zone, "temp"))
        try:
            temp = int(raw) / 1000.0
        except (TypeError, ValueError):
            continue
        label = read_text(os.path.join(zone, "type")) or os.path.basename(zone)
        temps[label] = temp
        trips = []
        for kind_file in glob.glob(os.path.join(zone, "trip_point_*_type")):
            if read_text(kind_file) in ("passive", "hot", "critical"):
                try:
                    trips.append(int(read_text(kind_file[:-5] + "_temp")) / 1000.0)
                except (TypeError, ValueError):
                    pass
        if trips and temp >= min(trips) and not throttled:
            throttled, why = True, "%s at %.1f C, at or above its trip point %.1f C" % (label, temp, min(trips))
    flags = read_text(sysfs("/sys/devices/platform/soc/soc:firmware/get_throttled"))
    if flags is not None:
        try:
            now = int(flags, 16) & 0xE  # arm frequency capped, throttled, soft temperature limit: now
        except ValueError:
            now = 0
        if now and not throttled:
            throttled, why = True, "the firmware reports throttling (get_throttled=0x%x)" % int(flags, 16)
    return (max(temps.values()) if temps else None), temps, throttled, why


def serving_state(root):
    """Whether the `edgert serve` this agent started runs: its systemd unit, or its recorded process."""
    pid = pid_alive(os.path.join(root, "server", "serve.pid"))
    if pid:
        return dict(running=True, how="process %d" % pid)
    scope, _why = systemd_scope()
    if scope is not None:
        ctl = ["systemctl"] + ([] if scope == "system" else ["--user"])
        done = subprocess.run(ctl + ["is-active", "edgert-serve.service"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)
        if done.stdout.strip() == "active":
            return dict(running=True, how="systemd %s unit" % scope)
    return dict(running=False, how="")


def model_facts(models):
    versions = sorted(e[2:] for e in os.listdir(models) if e.startswith("v-")) if os.path.isdir(models) else []
    last = None
    raw = read_text(os.path.join(models, ".last-check.json"))
    if raw:
        try:
            last = json.loads(raw)
        except ValueError:
            last = None
    return dict(active=version_of(os.path.join(models, "current")),
                previous=version_of(os.path.join(models, "previous")), versions=versions, last_check=last)


def writable(root):
    """Whether the remote directory (or the folder it would be made in) is on a writable file system."""
    path = root
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return not (os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))


def cmd_facts(root, *names, **options):
    """What a board has: its machine, Python, runtime, models, disk, temperature and server (changes nothing).
    `runtime=False` skips importing the runtime to see that it works (a rollout's quick look)."""
    root, _ = paths(root, "_")
    model_root = os.path.join(root, "models")
    if not names and os.path.isdir(model_root):
        names = sorted(n for n in os.listdir(model_root) if os.path.isdir(os.path.join(model_root, n)))
    python = runtime_python(root)
    ok, why = runtime_status(python) if options.get("runtime", True) else runtime_present(python)
    hottest, temps, throttled, throttle_reason = thermal_state()
    device_tree = (read_text(sysfs("/proc/device-tree/model"))
                   or read_text(sysfs("/sys/firmware/devicetree/base/model")) or "")
    return dict(machine=os.environ.get("EDGERT_MACHINE") or platform.machine(), python=list(sys.version_info[:3]),
                executable=sys.executable, root=root, free_bytes=free_bytes(root), writable=writable(root),
                runtime_python=python, runtime_ok=ok, runtime_error=why, device_tree_model=device_tree.strip("\x00"),
                models=dict((n, model_facts(os.path.join(model_root, n))) for n in names),
                temperature_c=hottest, thermal_zones=temps, throttled=throttled, throttle_reason=throttle_reason,
                serving=serving_state(root))


def run_check(root, models, version, reference, baseline, runs):
    """The new version's health check (`python3 BUNDLE check`): its result, or AgentError when it cannot run."""
    python = runtime_python(root)
    argv = [python, os.path.join(models, "v-" + version), "check", reference, "--runs", str(int(runs))]
    if baseline and os.path.isdir(os.path.join(models, "v-" + baseline)):
        argv += ["--baseline", os.path.join(models, "v-" + baseline)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=1800)
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    lines = [l for l in (done.stderr + done.stdout).strip().splitlines() if l.strip()]
    fail("check", "the health check could not run on the board: %s" % (lines[-1] if lines else "no output"))


def record_check(models, result):
    path = os.path.join(models, ".last-check.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(path + ".tmp", path)


def ready_and_infer(port, name, version, timeout_s=60):
    """The board's server is ready and answers one inference with `version`; else AgentError."""
    import time
    from urllib.request import Request, urlopen

    base = "http://127.0.0.1:%s/v2" % port
    deadline = time.time() + timeout_s
    while True:
        try:
            urlopen(base + "/health/ready", timeout=5).read()
            meta = json.loads(urlopen("%s/models/%s" % (base, name), timeout=5).read().decode())
            if version in (meta.get("versions") or []):
                break
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if time.time() > deadline:
            fail("serve", "edgert serve on port %s did not report %s version %s ready within %d s"
                 % (port, name, version, timeout_s))
        time.sleep(0.2)
    inputs = [dict(name=i["name"], shape=[d if d > 0 else 1 for d in i["shape"]], datatype=i["datatype"],
                   data=[0] * max(1, _count(i["shape"]))) for i in meta.get("inputs", [])]
    request = Request("%s/models/%s/infer" % (base, name), data=json.dumps(dict(inputs=inputs)).encode(),
                      headers={"Content-Type": "application/json"})
    try:
        answer = json.loads(urlopen(request, timeout=30).read().decode())
    except Exception as exc:  # noqa: BLE001 - HTTP error, refused, timeout: one line
        fail("serve", "edgert serve on port %s did not answer an inference: %s" % (port, exc))
    if answer.get("model_version") not in (None, version):
        fail("serve", "edgert serve answered with version %s, not %s" % (answer.get("model_version"), version))
    return dict(ready=True, outputs=[o.get("name") for o in answer.get("outputs", [])])


def _count(shape):
    n = 1
    for d in shape:
        n *= d if d > 0 else 1
    return n


COMMANDS = {"probe": cmd_probe, "install": cmd_install, "rollback": cmd_rollback, "setup": cmd_setup,
            "exec": cmd_exec, "serve": cmd_serve, "unserve": cmd_unserve, "facts": cmd_facts}


def main(argv):
    """Run one command and print its reply as one JSON line (`ok` true or false); exit 0 or 1."""
    def reply(ok, fields):
        fields["ok"] = ok
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
        sys.exit(0 if ok else 1)

    too_old = python_too_old()
    if too_old:
        reply(False, dict(kind="python_too_old", message=too_old, python=list(sys.version_info[:3])))
    if len(argv) < 1 or argv[0] not in COMMANDS:
        reply(False, dict(kind="usage", message="usage: agent {%s} ARGS" % ",".join(sorted(COMMANDS))))
    try:
        result = COMMANDS[argv[0]](*argv[1:])
    except AgentError as exc:
        reply(False, dict(exc.fields, kind=exc.kind, message=exc.message))
    reply(True, result)


if __name__ == "__main__":
    main(sys.argv[1:])
