"""Security regressions: what a careless one-line change could silently open up.

(a) No dashboard or job server that we start listens beyond 127.0.0.1 (the embedded local Ray's included).
(b) Every ``ray start`` of the cluster runs with token auth, and the token reaches the nodes via ``file_mounts``,
    never through git or a command line.
(c) Experiment configs are parsed by a safe YAML loader, and no production code deserializes with pickle (or a
    pickle in disguise: joblib, dill, ``torch.load`` without ``weights_only=True``, ``pandas.read_pickle``).
(d) The HTML report escapes user-supplied strings.
(e) numpy loads pass ``allow_pickle=False`` explicitly.

Each check is written to fail when its property regresses, and the static scanners are themselves tested on code
that does each forbidden thing, so a scanner that silently stopped matching would fail too.
"""
from __future__ import annotations

import ast
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from embedtune.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
#: Code that ships to users and cluster nodes.
PRODUCTION_DIRS = ("platform", "jobs", "strategies")
LOCALHOST = "127.0.0.1"


SKIP_DIRS = frozenset({".venv", ".git", "results", ".cache", "__pycache__", ".pytest_cache", ".hypothesis",
                       "node_modules", "build"})


def repo_files(*patterns: str) -> list[Path]:
    """The project's own files matching any glob pattern (virtualenv, results and caches pruned, not walked)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]
    return sorted(found)


def python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


# --- (a) dashboards bind to 127.0.0.1, the embedded Ray's too -----------------------------------------------------

#: ``--dashboard-host=X``, ``--dashboard-host X``, ``"--dashboard-host", "X"`` (argv lists), ``dashboard_host=X``.
DASHBOARD_HOST = re.compile(
    r"""--dashboard-host(?:=|\s+|["']\s*,\s*["'])([^\s"',\])}`]+)|dashboard_host\s*=\s*["']?([^\s"',\)]+)""")


def dashboard_hosts(text: str) -> list[str]:
    return [a or b for a, b in DASHBOARD_HOST.findall(text)]


def test_dashboard_host_pattern_sees_every_spelling() -> None:
    text = ('ray start --head --dashboard-host=0.0.0.0\nray start --dashboard-host 0.0.0.0\n'
            '["ray", "start", "--dashboard-host", "0.0.0.0"]\nray.init(dashboard_host="0.0.0.0")\n')
    assert dashboard_hosts(text) == ["0.0.0.0"] * 4


def test_every_dashboard_host_in_the_repo_is_localhost() -> None:
    """cluster.yaml, README, Makefile, CI script, tests, jobs, benchmarks, package: any explicit dashboard host."""
    found: dict[str, list[str]] = {}
    for path in repo_files("*.py", "*.yaml", "*.yml", "*.md", "*.sh", "*.toml", "Makefile", "run"):
        if path == Path(__file__).resolve():
            continue  # this file spells out the bad hosts on purpose
        hosts = dashboard_hosts(path.read_text(errors="replace"))
        if hosts:
            found[str(path.relative_to(ROOT))] = hosts
    bad = {file: hosts for file, hosts in found.items() if set(hosts) - {LOCALHOST}}
    assert not bad, f"dashboards bound beyond localhost: {bad}"
    assert {"cluster.yaml", "README.md", "tests/ray_local.py"} <= set(found), found


def _argv_lists(tree: ast.AST) -> Iterator[list[str]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            yield [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_every_ray_head_our_tests_start_binds_the_dashboard_to_localhost() -> None:
    """A head started without the flag would rely on Ray's default; ours must say 127.0.0.1 explicitly."""
    heads = 0
    for path in python_files("tests", "jobs", "benchmarks", "platform"):
        for argv in _argv_lists(ast.parse(path.read_text())):
            if "start" in argv and "--head" in argv:
                heads += 1
                assert f"--dashboard-host={LOCALHOST}" in argv, f"{path}: {argv}"
    assert heads >= 1


def _cluster() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _cluster_commands(cluster: dict[str, Any]) -> list[str]:
    return [c for key, value in cluster.items() if key.endswith("_commands") and isinstance(value, list)
            for c in value if isinstance(c, str)]


def _ray_start_segments(command: str) -> list[str]:
    return [s.strip() for s in re.split(r";|&&|\|\||\n", command) if re.search(r"\bray start\b", s)]


def test_cluster_head_binds_the_dashboard_to_localhost() -> None:
    heads = [s for c in _cluster_commands(_cluster()) for s in _ray_start_segments(c) if "--head" in s]
    assert heads, "cluster.yaml starts no Ray head"
    for segment in heads:
        assert f"--dashboard-host={LOCALHOST}" in segment, segment


def test_embedded_ray_binds_its_dashboard_to_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """ensure_ray's local branch, called for real with ray.init captured (no Ray is started)."""
    import ray

    from embedtune import runtime
    from embedtune.config import parse_config

    calls: list[dict[str, Any]] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: calls.append(kwargs))
    assert runtime.ensure_ray(parse_config({"name": "sec"})) is True
    assert len(calls) == 1, calls
    if calls[0].get("include_dashboard") is not False:  # Ray's default host would be 127.0.0.1 too; say it
        assert calls[0].get("dashboard_host") == LOCALHOST, calls


# --- (b) token auth on every ray start of the cluster -------------------------------------------------------------

def test_every_cluster_ray_start_uses_token_auth() -> None:
    commands = _cluster_commands(_cluster())
    segments = [(c, s) for c in commands for s in _ray_start_segments(c)]
    assert sum("--head" in s for _, s in segments) >= 1 and sum("--head" not in s for _, s in segments) >= 1
    for command, segment in segments:
        prefixed = re.search(r"(?:^|\s)RAY_AUTH_MODE=token\s+(?:\w+=\S*\s+)*ray start\b", segment)
        exported = re.search(r"\bexport\s+(?:\w+=\S*\s+)*RAY_AUTH_MODE=token\b", command.split(segment)[0])
        assert prefixed or exported, f"ray start without RAY_AUTH_MODE=token: {command}"


def test_cluster_token_is_shipped_by_file_mounts_not_git() -> None:
    cluster = _cluster()
    text = (ROOT / "cluster.yaml").read_text()
    home = f"/home/{cluster['auth']['ssh_user']}"
    mounts = cluster.get("file_mounts") or {}
    token_path = f"{home}/.ray/auth_token"  # where Ray reads the token by default (~/.ray/auth_token)
    assert token_path in mounts, mounts
    source = Path(str(mounts[token_path])).expanduser()
    assert source.is_absolute() and not source.resolve().is_relative_to(ROOT), "the token must live outside the repo"
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text), "a token value on a command line ends up in git and logs"
    # The project folder is synced to the nodes; a token file inside it would be too (and committed).
    assert repo_files("auth_token", "*.token") == []


# --- (c) safe YAML and no pickle-based deserialization ------------------------------------------------------------

@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system"])
def test_python_yaml_tags_are_rejected_by_the_cli(tag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    marker = tmp_path / "pwned"
    payload = f'["touch {marker}"]' if "name:" not in tag else "''"
    config = tmp_path / "evil.yaml"
    config.write_text(f"name: {tag} {payload}\n")
    code = cli_main(["validate-config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "invalid YAML" in err and str(config) in err, err
    assert not marker.exists()


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    call: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.call}: {self.why}"


#: Deserializers that execute arbitrary code from their input; called at all, they are findings.
UNSAFE_CALLS: dict[str, str] = {
    **{f"{m}.{f}": "unpickles its input" for m in ("pickle", "_pickle", "cPickle", "cloudpickle", "ray.cloudpickle",
                                                   "dill", "joblib", "shelve", "marshal")
       for f in ("load", "loads", "Unpickler", "open")},
    "pandas.read_pickle": "unpickles its input",
    "yaml.unsafe_load": "constructs arbitrary Python objects",
    "yaml.unsafe_load_all": "constructs arbitrary Python objects",
    "yaml.full_load": "constructs Python objects",
    "yaml.full_load_all": "constructs Python objects",
}
#: Modules with no safe use for reading data; importing them at all is a finding.
UNSAFE_MODULES = ("dill",)
SAFE_YAML_LOADERS = ("SafeLoader", "CSafeLoader")


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> fully qualified name, from every import in the module (``pd`` -> ``pandas``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _qualified(func: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    head = aliases.get(func.id, func.id)
    return ".".join([head, *reversed(parts)])


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _names_safe_loader(node: ast.expr | None) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in SAFE_YAML_LOADERS) or (
        isinstance(node, ast.Name) and node.id in SAFE_YAML_LOADERS)


def scan_source(source: str, path: str) -> tuple[list[Finding], dict[str, int]]:
    """Unsafe deserialization in one module, and a count of the checked-safe calls (to prove the scan sees them)."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    findings: list[Finding] = []
    safe: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in UNSAFE_MODULES:
                    findings.append(Finding(path, node.lineno, f"import {module}", "dill unpickles arbitrary code"))
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        if name is None:
            continue
        why: str | None = UNSAFE_CALLS.get(name)
        if name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            why = None if _names_safe_loader(loader) else "yaml.load without SafeLoader"
        elif name == "torch.load":
            why = None if _is_constant(_keyword(node, "weights_only"), True) else "torch.load without weights_only=True"
        elif name == "numpy.load":
            why = None if _is_constant(_keyword(node, "allow_pickle"), False) else \
                "numpy.load without an explicit allow_pickle=False"
        if why:
            findings.append(Finding(path, node.lineno, name, why))
        elif name in ("yaml.load", "yaml.load_all", "yaml.safe_load", "yaml.safe_load_all", "torch.load",
                      "numpy.load"):
            safe[name] = safe.get(name, 0) + 1
    return findings, safe


UNSAFE_EXAMPLES = {
    "pickle.load": "import pickle\npickle.load(f)\n",
    "pickle.loads via from-import": "from pickle import loads\nloads(b)\n",
    "pickle alias": "import pickle as pk\npk.Unpickler(f).load()\n",
    "ray cloudpickle": "from ray import cloudpickle\ncloudpickle.loads(b)\n",
    "joblib.load": "import joblib\njoblib.load(p)\n",
    "dill import": "import dill\n",
    "dill from-import": "from dill import loads\n",
    "pandas.read_pickle": "import pandas as pd\npd.read_pickle(p)\n",
    "yaml.load bare": "import yaml\nyaml.load(text)\n",
    "yaml.load unsafe Loader": "import yaml\nyaml.load(text, Loader=yaml.Loader)\n",
    "yaml.load FullLoader positional": "import yaml\nyaml.load(text, yaml.FullLoader)\n",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(text)\n",
    "yaml.full_load": "from yaml import full_load\nfull_load(text)\n",
    "torch.load bare": "import torch\ntorch.load(p)\n",
    "torch.load weights_only=False": "import torch\ntorch.load(p, weights_only=False)\n",
    "numpy.load bare": "import numpy as np\nnp.load(p)\n",
    "numpy.load allow_pickle=True": "import numpy as np\nnp.load(p, allow_pickle=True)\n",
    "numpy.load from-import": "from numpy import load\nload(p, allow_pickle=flag)\n",
}
SAFE_EXAMPLES = {
    "yaml.safe_load": "import yaml\nyaml.safe_load(text)\n",
    "yaml.load SafeLoader": "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)\n",
    "torch.load weights_only": "import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n",
    "numpy.load allow_pickle=False": "import numpy as np\nnp.load(p, allow_pickle=False)\n",
    "pickle error class only": "import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass\n",
    "cloudpickle by value": "from ray import cloudpickle\ncloudpickle.register_pickle_by_value(m)\n",
}


@pytest.mark.parametrize("case", sorted(UNSAFE_EXAMPLES))
def test_scanner_flags_each_unsafe_pattern(case: str) -> None:
    findings, _ = scan_source(UNSAFE_EXAMPLES[case], case)
    assert findings, f"the scanner missed: {UNSAFE_EXAMPLES[case]!r}"


@pytest.mark.parametrize("case", sorted(SAFE_EXAMPLES))
def test_scanner_accepts_the_safe_spellings(case: str) -> None:
    findings, _ = scan_source(SAFE_EXAMPLES[case], case)
    assert findings == []


def test_production_code_never_deserializes_unsafely() -> None:
    findings: list[Finding] = []
    safe: dict[str, int] = {}
    files = python_files(*PRODUCTION_DIRS)
    assert len(files) > 50
    for path in files:
        found, counts = scan_source(path.read_text(), str(path.relative_to(ROOT)))
        findings += found
        for name, count in counts.items():
            safe[name] = safe.get(name, 0) + count
    assert not findings, "unsafe deserialization:\n" + "\n".join(map(str, findings))
    # The scan really reads the places that load configs, checkpoints and scalers.
    assert min(safe.get("yaml.safe_load", 0), safe.get("torch.load", 0)) >= 2 and safe.get("numpy.load", 0) >= 1, safe


def test_config_loader_is_yaml_safe_load() -> None:
    """The one function every command uses to read an experiment file parses with ``yaml.safe_load``."""
    from embedtune.config import loading as config

    tree = ast.parse(Path(config.__file__).read_text())
    loader = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "load_config")
    calls = {_qualified(n.func, _aliases(tree)) for n in ast.walk(loader) if isinstance(n, ast.Call)}
    assert "yaml.safe_load" in calls and not {"yaml.load", "yaml.full_load", "yaml.unsafe_load"} & calls


# --- (d) the HTML report escapes user strings ---------------------------------------------------------------------

PAYLOADS = {
    "experiment": "<script>alert('experiment')</script>",
    "description": "<script>alert('description')</script><img src=x onerror=alert(1)>",
    "strategy": "<script>alert('strategy')</script>",
    "text_param": "<script>alert('param')</script>",
}


def _report(root: Path, **strings: str) -> str:
    from embedtune.report.html import write_html_report
    from leaderboard_bundles import make_bundle  # tests/ is on sys.path (pytest rootdir conftest)

    bundle = make_bundle(root / "results", n_trials=4, **strings)  # type: ignore[arg-type]
    return write_html_report(bundle, root / "report.html").read_text(encoding="utf-8")


def test_html_report_escapes_user_strings(tmp_path: Path) -> None:
    from html import escape

    benign = _report(tmp_path / "benign", experiment="demo", description="plain", strategy="direction_threshold",
                     text_param="plain")
    page = _report(tmp_path / "evil", **PAYLOADS)
    assert "<script>alert" not in page and "<img src=x" not in page
    for field, payload in PAYLOADS.items():
        assert escape(payload) in page, f"{field} is not shown (escaped) at all"
    # No user string opened or closed a tag: the page has exactly the script tags a benign report has.
    for tag in ("<script", "</script", "<img"):
        assert page.count(tag) == benign.count(tag), tag
