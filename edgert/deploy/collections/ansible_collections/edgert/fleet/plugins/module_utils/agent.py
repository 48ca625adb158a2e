# The board side of edgert: the one implementation of everything that happens on a board. `edgert deploy` sends
# this file over SSH and runs it as `python3 -c <this file> COMMAND ...`, the Ansible collection's modules import it
# (module_utils), and a bundle carries it and imports it on the board (its own verify and runtime check), so a fix
# here is a fix everywhere. It stays one file because deploy sends it as one script.
#
# It answers: where the runtime's Python is and whether the runtime is there (`runtime_python`, `runtime_status`,
# `ensure_runtime`); how a version is received, verified, switched and rolled back (`check_free`, `stage`, `activate`,
# `restore`, `cmd_install`, `cmd_rollback`, `verify_bundle`); the default root (`DEFAULT_ROOT`); how serving is asked
# for and detected (`serve_requested`, `serving_state`).
#
# Standard library only, and written so that even Python 2.7 parses it (no f-strings, no annotations): an old
# Python on the board must get a clear "too old" answer, not a SyntaxError. Each command returns a dict or raises
# AgentError; run as a script, it prints one JSON line.
#
# Layout under the remote directory (the root, DEFAULT_ROOT unless told):
#   venv/                           the runtime, made by `setup` where the board's Python lacks it
#   models/NAME/v-VERSION/          one unpacked bundle per version, every file checked against its manifest
#   models/NAME/current, previous   symlinks to versions, switched with rename(2), so never half-written
#   models/NAME/.incoming/          uploads in progress; whatever is left there by a dropped connection is cleared
#                                   by the next install
#   models/NAME/.last-check.json    the last health check a rollout ran on this board (agreement, p50)
import errno
import fcntl  # POSIX only, like the boards
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile

MIN_PYTHON = (3, 10)
DEFAULT_ROOT = "~/edgert"
MANIFEST = "manifest.json"
CHUNK = 1 << 20
# Free space an install needs in the models folder, as a multiple of the bundle's size: the bundle itself, its
# unpacked copy, and as much again to spare.
FREE_SPACE_FACTOR = 3
# What running a model needs, by group: (how a person installs it, the modules any one of which will do).
RUNTIME = (("numpy", ("numpy",)), ("click", ("click",)),
           ("ai-edge-litert (or tflite-runtime)", ("ai_edge_litert", "tflite_runtime", "tensorflow")))
# What `edgert serve` needs besides (edgert[serve]).
SERVE = (("uvicorn", ("uvicorn",)), ("starlette", ("starlette",)), ("prometheus-client", ("prometheus_client",)))


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


# --- where things are ------------------------------------------------------------------------------------------

def paths(root, name):
    """(the root, its folder for model `name`), absolute; `root` None or empty is DEFAULT_ROOT."""
    root = os.path.abspath(os.path.expanduser(root or DEFAULT_ROOT))
    return root, os.path.join(root, "models", name)


def version_of(link):
    try:
        return os.path.basename(os.readlink(link))[2:]
    except OSError:
        return None


def venv_dir(root):
    return os.path.join(root, "venv")


def venv_python(root):
    return os.path.join(venv_dir(root), "bin", "python")


def runtime_python(root):
    """The Python that runs models under `root`: its venv's when `setup` made one, else the one running this."""
    candidate = venv_python(root)
    return candidate if os.path.exists(candidate) else sys.executable


def root_of(folder):
    """The root a bundle unpacked as ROOT/models/NAME/v-VERSION (or reached through its `current` link) belongs to,
    or None for a bundle elsewhere."""
    folder = os.path.realpath(folder)
    models = os.path.dirname(os.path.dirname(folder))
    if os.path.basename(folder).startswith("v-") and os.path.basename(models) == "models":
        return os.path.dirname(models)
    return None


def free_bytes(path):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --- the runtime -----------------------------------------------------------------------------------------------

# Which groups of modules a Python lacks: run in this process for this interpreter, or by another Python as
# `python -c ABSENT LOAD GROUPS`, which prints the indices of the missing groups. With LOAD "1" each module is
# imported (what a run does), else only looked for (quick).
ABSENT = r'''
import importlib, json, sys


def missing_groups(groups, load):
    import importlib.util
    missing = []
    for index, modules in enumerate(groups):
        for module in modules:
            try:
                found = importlib.import_module(module) if load else importlib.util.find_spec(module)
            except Exception:
                found = None
            if found is not None:
                break
        else:
            missing.append(index)
    return missing


if __name__ == "__main__":
    print(json.dumps(missing_groups(json.loads(sys.argv[2]), sys.argv[1] == "1")))
'''
_ABSENT = {"__name__": "edgert_absent"}
exec(ABSENT, _ABSENT)  # noqa: S102 - our own text: one definition, run here or in another Python


def same_interpreter(python):
    """Whether `python` is the interpreter running this, with its packages. A venv's bin/python is a symlink to the
    interpreter it was made from, so resolving links would mistake the venv for that interpreter: paths are
    compared as given."""
    return os.path.abspath(python) == os.path.abspath(sys.executable)


def runtime_status(python, serve=False, load=True):
    """(ok, why): whether `python` has what running a model needs (and `edgert serve`, with `serve`). `why` names
    the Python and what it lacks. `load` imports each package, as a run would; else they are only looked for."""
    groups = RUNTIME + (SERVE if serve else ())
    modules = [list(g[1]) for g in groups]
    if same_interpreter(python):
        missing = _ABSENT["missing_groups"](modules, load)
    else:
        try:
            done = subprocess.run([python, "-c", ABSENT, "1" if load else "0", json.dumps(modules)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, "%s does not run (%s)" % (python, exc)
        lines = done.stdout.strip().splitlines()
        try:
            missing = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = done.stderr.strip().splitlines()[-1:] or ["exit status %d" % done.returncode]
            return False, "%s cannot check its packages (%s)" % (python, tail[0])
    if not missing:
        return True, ""
    return False, "%s lacks %s" % (python, ", ".join(groups[i][0] for i in missing))


def requirement_name(requirement):
    """`uvicorn>=0.30; sys_platform != 'win32'` -> `uvicorn`."""
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), 1)[0].lower().replace("_", "-")


def serve_requested(requirements):
    """Whether a list of requirements asks for `edgert serve` as well (it holds edgert[serve]'s server)."""
    return any(requirement_name(r) == SERVE[0][0] for r in requirements)


def runtime_missing(root, why):
    """The one line for a board whose runtime is missing when nothing was asked to install it."""
    return ("the runtime is missing on the board: %s; run again with --setup to install it in %s (or use the "
            "edgert.fleet.runtime module), or install them for that Python" % (why, venv_dir(root)))


def ensure_runtime(root, requirements=None, index_url="-"):
    """The runtime under `root`, installed in its venv where missing when `requirements` are given (else a missing
    runtime is an AgentError). Returns dict(installed, python)."""
    root, _models = paths(root, "_")
    serve = serve_requested(requirements or ())
    python = runtime_python(root)
    ok, why = runtime_status(python, serve, load=False)
    if ok:
        return dict(installed=False, python=python)
    if requirements is None:
        fail("runtime_missing", runtime_missing(root, why), python=python)
    return cmd_setup(root, index_url, *requirements)


def _make_venv(root):
    """Make root/venv from this Python; returns the command that runs pip for it. Where this Python has no ensurepip
    (Debian without python3-venv) the venv is made without pip and this Python's own pip installs into it."""
    target = venv_dir(root)
    if os.path.isdir(target):
        shutil.rmtree(target)  # a venv without its Python: what an interrupted setup left
    made = subprocess.run([sys.executable, "-m", "venv", target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    if made.returncode == 0:
        return [venv_python(root), "-m", "pip"]
    shutil.rmtree(target, ignore_errors=True)
    if "ensurepip" in made.stdout:
        pip = [sys.executable, "-m", "pip", "--python", venv_python(root)]
        bare = subprocess.run([sys.executable, "-m", "venv", "--without-pip", target], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, check=False)
        if bare.returncode == 0 and subprocess.run(pip + ["--version"], stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, check=False).returncode == 0:
            return pip
        shutil.rmtree(target, ignore_errors=True)
        fail("setup", "cannot make a virtual environment with %s: it has no ensurepip and no pip >= 22.3; install "
             "python3-venv (sudo apt install python3-venv) and run again" % sys.executable)
    tail = made.stdout.strip().splitlines()[-1:] or [""]
    fail("setup", "could not create a virtual environment with %s (%s); check the Python installation"
         % (sys.executable, tail[0]))


def cmd_setup(root, index_url, *requirements):
    """Install `requirements` in root/venv unless the runtime Python under root has them already (idempotent)."""
    root, _models = paths(root, "_")
    machine = os.environ.get("EDGERT_MACHINE") or platform.machine()
    if machine in ("armv7l", "armv6l", "armv8l") and any(requirement_name(r) == "ai-edge-litert"
                                                         for r in requirements):
        fail("no_wheel", "ai-edge-litert has no wheel for %s (32-bit ARM); install a 64-bit OS on the board (e.g. "
             "Raspberry Pi OS 64-bit), or install tflite-runtime with numpy<2 there (pip install tflite-runtime "
             "'numpy<2'; edgert uses it) and deploy without --setup" % machine, machine=machine)
    serve = serve_requested(requirements)
    python = runtime_python(root)
    if runtime_status(python, serve)[0]:
        return dict(installed=False, python=python)
    try:
        os.makedirs(root, exist_ok=True)
        handle = _lock_file(os.path.join(root, ".setup.lock"), "another setup under %s is in progress; wait for it "
                            "to finish" % root)
    except (IOError, OSError) as exc:
        io_failure(exc, root)
    try:
        python = venv_python(root)
        pip = [python, "-m", "pip"] if os.path.exists(python) else _make_venv(root)
        command = pip + ["install", "--disable-pip-version-check", "--quiet"]
        if index_url and index_url != "-":
            command += ["--extra-index-url", index_url]
        done = subprocess.run(command + list(requirements), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, check=False)
        if done.returncode != 0:
            lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
            fail("setup", "pip could not install %s on the board: %s" % (" ".join(requirements),
                                                                         lines[-1] if lines else "no output"))
        ok, why = runtime_status(python, serve)
        if not ok:
            fail("setup", "the runtime was installed but does not import: %s" % why)
    finally:
        handle.close()
    return dict(installed=True, python=python, requirements=list(requirements))


# --- versions: receive, check, switch, roll back ---------------------------------------------------------------

def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_bundle(path):
    """The first file of a bundle (a zip, or a folder it was unpacked into) that is missing or differs from its
    manifest, `manifest.json` when that is unreadable, or None when every file matches."""
    archive = None
    try:
        if os.path.isdir(path):
            def opened(rel):
                return open(os.path.join(path, rel), "rb")
        else:
            archive = zipfile.ZipFile(path)
            opened = archive.open
        try:
            with opened(MANIFEST) as f:
                files = json.loads(f.read().decode("utf-8"))["files"]
        except (IOError, OSError, KeyError, ValueError, TypeError):
            return MANIFEST
        for rel, want in sorted(files.items()):
            digest, size = hashlib.sha256(), 0
            try:
                with opened(rel) as f:
                    for block in iter(lambda: f.read(CHUNK), b""):
                        digest.update(block)
                        size += len(block)
            except (IOError, OSError, KeyError):
                return rel
            if size != want["size"] or digest.hexdigest() != want["sha256"]:
                return rel
        return None
    except (IOError, OSError, zipfile.BadZipfile):
        return MANIFEST
    finally:
        if archive is not None:
            archive.close()


def version_present(models, version):
    """Whether v-VERSION is on the board, whole."""
    folder = os.path.join(models, "v-" + version)
    return os.path.isdir(folder) and verify_bundle(folder) is None


def io_failure(exc, where):
    """A failed write on the board as one line: a full disk, a read-only one, or the OS's own words."""
    if exc.errno == errno.ENOSPC:
        fail("disk_full", "the board ran out of disk space in %s; free some space or choose another remote "
             "directory (the active model was not touched)" % where)
    if exc.errno == errno.EROFS:
        fail("read_only", "%s is on a read-only file system; remount it read-write or choose another remote "
             "directory (the active model was not touched)" % where)
    if exc.errno == errno.EACCES:
        fail("permission", "%s is not writable by this user; fix its permissions or choose another remote "
             "directory (the active model was not touched)" % where)
    fail("io", "%s: %s (the active model was not touched)" % (getattr(exc, "filename", "") or where, exc))


def _lock_file(path, busy):
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError):
        handle.close()
        fail("busy", busy)
    return handle


def open_models(root, name):
    """(root, the model's folder, its lock): created and locked; a read-only or unwritable root is one line."""
    root, models = paths(root, name)
    try:
        os.makedirs(models, exist_ok=True)
        return root, models, _lock_file(os.path.join(models, ".lock"), "another deploy to %s is in progress; wait "
                                        "for it to finish" % models)
    except (IOError, OSError) as exc:
        io_failure(exc, models)


def clear_incoming(models):
    """Remove what a dropped upload left (first: it may be what fills the disk); returns the folder."""
    incoming = os.path.join(models, ".incoming")
    if os.path.isdir(incoming):
        shutil.rmtree(incoming, ignore_errors=True)
    return incoming


def check_free(models, size):
    """Refuse an install of a `size`-byte bundle where FREE_SPACE_FACTOR times that is not free."""
    need, free = FREE_SPACE_FACTOR * int(size), free_bytes(models)
    if free < need:
        fail("disk_full", "not enough disk space in %s: %.1f MiB free, the bundle needs %.1f MiB; free some space or "
             "choose another remote directory" % (models, free / 2.0 ** 20, need / 2.0 ** 20))


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


def stage(models, version, archive_path, sha256=None):
    """Put a bundle that is on the board in place as v-VERSION: its sha256 checked (when given), unpacked, every
    file checked against the manifest; a whole copy already there is kept. Nothing switches."""
    if sha256 and file_sha256(archive_path) != sha256:
        fail("checksum", "the bundle's checksum on the board does not match the one sent; nothing was installed, "
             "run again")
    incoming = os.path.join(models, ".incoming")
    unpacked = os.path.join(incoming, "%s.%d" % (version, os.getpid()))
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(unpacked)
        os.chmod(os.path.join(unpacked, "run"), 0o755)
        bad = verify_bundle(unpacked)
        if bad:
            fail("checksum", "%s does not match its checksum in the manifest after unpacking; the active model was "
                 "not touched, deploy again" % bad)
        final = os.path.join(models, "v-" + version)
        if version_present(models, version):
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


def symlink_atomic(target, link):
    tmp = "%s.%d.tmp" % (link, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, link)  # atomic on POSIX: readers see the old link or the new one, never none


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def prune(models, keep):
    for entry in os.listdir(models):
        if entry.startswith("v-") and entry[2:] not in keep:
            shutil.rmtree(os.path.join(models, entry), ignore_errors=True)


def cmd_install(root, name, version, size, sha256):
    """`edgert deploy`'s install: the bundle arrives on stdin, then `stage` and `activate`."""
    root, models, handle = open_models(root, name)
    incoming = clear_incoming(models)
    check_free(models, size)
    part = os.path.join(incoming, "%s.%d.zip" % (version, os.getpid()))
    try:
        os.makedirs(incoming)
        receive(part, int(size), sha256)
    except (IOError, OSError) as exc:
        shutil.rmtree(incoming, ignore_errors=True)  # nothing half-received stays behind
        io_failure(exc, models)
    except AgentError:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    stage(models, version, part)
    before, _previous = activate(models, version)
    previous = version_of(os.path.join(models, "previous"))
    prune(models, set(v for v in (version, previous) if v))
    handle.close()
    return dict(version=version, previous=previous, switched=before != version,
                path=os.path.join(models, "current"))


def cmd_rollback(root, name):
    root, models = paths(root, name)
    if not os.path.isdir(models):
        fail("not_deployed", "%s is not deployed under %s; nothing to roll back" % (name, root))
    root, models, handle = open_models(root, name)
    current = version_of(os.path.join(models, "current"))
    previous = version_of(os.path.join(models, "previous"))
    if not previous or not os.path.isdir(os.path.join(models, "v-" + previous)):
        fail("no_previous", "%s has no previous version on the board to roll back to (active: %s)"
             % (name, current or "none"))
    bad = verify_bundle(os.path.join(models, "v-" + previous))
    if bad:
        fail("checksum", "the previous version's %s does not match its manifest; not rolling back" % bad)
    symlink_atomic("v-" + previous, os.path.join(models, "current"))
    if current:
        symlink_atomic("v-" + current, os.path.join(models, "previous"))
    fsync_dir(models)
    handle.close()
    return dict(version=previous, replaced=current, path=os.path.join(models, "current"))


def cmd_probe(root, name):
    root, models = paths(root, name)
    python = runtime_python(root)
    ok, why = runtime_status(python)
    return dict(python=list(sys.version_info[:3]), executable=sys.executable, machine=platform.machine(),
                root=root, free_bytes=free_bytes(root), runtime_python=python, runtime_ok=ok,
                runtime_error=runtime_missing(root, why) if not ok else "", venv=os.path.exists(venv_python(root)),
                current=version_of(os.path.join(models, "current")),
                previous=version_of(os.path.join(models, "previous")))


def cmd_exec(root, name, *args):
    """Run the active bundle (`run`, `bench`, `verify`, ...) with the board's runtime Python; its output is ours."""
    root, models = paths(root, name)
    current = os.path.join(models, "current")
    if not os.path.isdir(current):
        fail("not_deployed", "%s is not deployed under %s; run edgert deploy first" % (name, root))
    python = runtime_python(root)
    os.execv(python, [python, current] + list(args))


# --- the health check a rollout runs -------------------------------------------------------------------------

def run_check(root, models, version, reference, baseline, runs, max_slowdown=None):
    """The new version's health check (`python3 BUNDLE check`, edgert.measure.health): its result, with
    `latency_failure` and `disagreement` saying why it fails, or AgentError when it cannot run."""
    python = runtime_python(root)
    argv = [python, os.path.join(models, "v-" + version), "check", reference, "--runs", str(int(runs))]
    if baseline and os.path.isdir(os.path.join(models, "v-" + baseline)):
        argv += ["--baseline", os.path.join(models, "v-" + baseline)]
    if max_slowdown:
        argv += ["--max-slowdown", "%g" % float(max_slowdown)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=1800, check=False)
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


# --- serving ---------------------------------------------------------------------------------------------------

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


def _run_text(argv):
    """(exit status, stdout and stderr together) of a command that may fail."""
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    return done.returncode, done.stdout


def systemd_scope():
    """'system' as root, 'user' otherwise, or None with the reason when systemd does not run here."""
    if not os.path.isdir("/run/systemd/system"):
        return None, "systemd is not running here"
    if not shutil.which("systemctl"):
        return None, "no systemctl"
    if os.geteuid() == 0:
        return "system", ""
    status, text = _run_text(["systemctl", "--user", "show-environment"])
    if status != 0:
        return None, "no systemd user instance (%s)" % (text.strip().splitlines() or [""])[-1]
    return "user", ""


def pid_alive(pid_file):
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
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


def local_http(port, path, body=None, timeout=5):
    """GET (or POST `body` as JSON to) http://127.0.0.1:PORT/v2PATH and return the decoded JSON reply. Straight to
    the board's own loopback: no proxy from the environment applies. Raises on refusal or an HTTP error."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request("POST" if body is not None else "GET", "/v2" + path,
                           json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        data = response.read()
        if response.status >= 400:
            raise IOError("HTTP %d: %s" % (response.status, data.decode("utf-8", "replace")[:200]))
        return json.loads(data.decode("utf-8")) if data else {}
    finally:
        connection.close()


def wait_live(port, seconds, running=None):
    """Whether the server answers on `port` within `seconds`; False at once when `running()` says it has exited."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            local_http(port, "/health/live", timeout=2)
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            if running is not None and not running():
                return False
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
            status, text = _run_text(ctl + step)
            if status != 0:
                fail("serve", "systemctl %s failed: %s" % (" ".join(step), text.strip()[-300:]))
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
    running = (lambda: process.poll() is None) if scope is None else None
    if not wait_live(port, 60, running):
        tail = ""
        if os.path.exists(log_file):
            with open(log_file) as f:
                tail = (f.read().strip().splitlines() or [""])[-1]
        if running is not None and not running():
            fail("serve", "edgert serve exited as it started on port %s%s" % (port, ": " + tail if tail else ""))
        fail("serve", "edgert serve did not answer on port %s within 60 s%s" % (port, ": " + tail if tail else ""))
    return dict(how=how, where=where, log=log_file if scope is None else "journalctl %s-u edgert-serve"
                % ("" if scope == "system" else "--user "), url="http://%s:%s/v2" % (host, port))


def cmd_unserve(root, grace):
    """Stop the server `cmd_serve` started (its unit is stopped and disabled, or its process ended by id)."""
    root, _models = paths(root, "_")
    scope, _why = systemd_scope()
    stopped = False
    if scope is not None:
        ctl = ["systemctl"] + ([] if scope == "system" else ["--user"])
        stopped = _run_text(ctl + ["disable", "--now", "edgert-serve.service"])[0] == 0
    stopped = stop_process(os.path.join(root, "server", "serve.pid"), float(grace)) or stopped
    return dict(stopped=stopped)


def serving_state(root):
    """Whether the `edgert serve` this agent started runs: its systemd unit, or its recorded process."""
    pid = pid_alive(os.path.join(root, "server", "serve.pid"))
    if pid:
        return dict(running=True, how="process %d" % pid)
    scope, _why = systemd_scope()
    if scope is not None:
        ctl = ["systemctl"] + ([] if scope == "system" else ["--user"])
        if _run_text(ctl + ["is-active", "edgert-serve.service"])[1].strip() == "active":
            return dict(running=True, how="systemd %s unit" % scope)
    return dict(running=False, how="")


def ready_and_infer(port, name, version, timeout_s=60):
    """The board's server is ready and answers one inference with `version`; else AgentError."""
    import time

    deadline = time.time() + timeout_s
    while True:
        try:
            local_http(port, "/health/ready")
            meta = local_http(port, "/models/%s" % name)
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
    try:
        answer = local_http(port, "/models/%s/infer" % name, dict(inputs=inputs), timeout=30)
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


# --- facts -----------------------------------------------------------------------------------------------------

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
    return not os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1)


def cmd_facts(root, *names, **options):
    """What a board has: its machine, Python, runtime, models, disk, temperature and server (changes nothing).
    `runtime=False` only looks for the runtime's packages instead of importing them (quicker)."""
    root, _models = paths(root, "_")
    model_root = os.path.join(root, "models")
    if not names and os.path.isdir(model_root):
        names = sorted(n for n in os.listdir(model_root) if os.path.isdir(os.path.join(model_root, n)))
    python = runtime_python(root)
    ok, why = runtime_status(python, load=options.get("runtime", True))
    hottest, temps, throttled, throttle_reason = thermal_state()
    device_tree = (read_text(sysfs("/proc/device-tree/model"))
                   or read_text(sysfs("/sys/firmware/devicetree/base/model")) or "")
    return dict(machine=os.environ.get("EDGERT_MACHINE") or platform.machine(), python=list(sys.version_info[:3]),
                executable=sys.executable, root=root, free_bytes=free_bytes(root), writable=writable(root),
                runtime_python=python, runtime_ok=ok, runtime_error=why, device_tree_model=device_tree.strip("\x00"),
                models=dict((n, model_facts(os.path.join(model_root, n))) for n in names),
                temperature_c=hottest, thermal_zones=temps, throttled=throttled, throttle_reason=throttle_reason,
                serving=serving_state(root))


COMMANDS = {"probe": cmd_probe, "install": cmd_install, "rollback": cmd_rollback, "setup": cmd_setup,
            "exec": cmd_exec, "serve": cmd_serve, "unserve": cmd_unserve, "facts": cmd_facts}


def main(argv):
    """Run one command and print its reply as one JSON line (`ok` true or false); returns the exit status."""
    def reply(ok, fields):
        fields["ok"] = ok
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
        return 0 if ok else 1

    too_old = python_too_old()
    if too_old:
        return reply(False, dict(kind="python_too_old", message=too_old, python=list(sys.version_info[:3])))
    if len(argv) < 1 or argv[0] not in COMMANDS:
        return reply(False, dict(kind="usage", message="usage: agent {%s} ARGS" % ",".join(sorted(COMMANDS))))
    try:
        result = COMMANDS[argv[0]](*argv[1:])
    except AgentError as exc:
        return reply(False, dict(exc.fields, kind=exc.kind, message=exc.message))
    return reply(True, result)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
