"""Every file in ``cluster/`` is parsed and checked: Ray's own schema for the launcher config, the
KubeRay manifest's structure, the SLURM script's syntax and Ray start-up, the image recipe, and the
README's commands. Each ``fairsearch run`` they show must name an existing space file and use only the
CLI's flags. Nothing may open a port to the world. A file this module does not know fails the walk, so
a new file in ``cluster/`` comes with its checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SPACES = REPO / "search_spaces"
AWS = CLUSTER / "aws-gpu.yaml"
KUBERAY = CLUSTER / "kuberay-rayjob.yaml"
SBATCH = CLUSTER / "slurm.sbatch"
DOCKERFILE = CLUSTER / "Dockerfile"
DOCKERIGNORE = CLUSTER / "Dockerfile.dockerignore"
README = CLUSTER / "README.md"

# The files of cluster/ and the tests of this module that check each; test_every_cluster_file_is_checked
# fails on a file missing here (or a test name that does not exist).
CHECKS: dict[str, tuple[str, ...]] = {
    "aws-gpu.yaml": (
        "test_aws_config_passes_rays_schema",
        "test_aws_gpu_workers_and_cpu_head",
        "test_aws_setup_installs_cuda_torch_and_the_repo",
        "test_aws_opens_no_port_to_the_world",
        "test_every_head_starts_without_grpc_fork_handlers",
    ),
    "kuberay-rayjob.yaml": (
        "test_kuberay_documents",
        "test_kuberay_gpu_workers_and_resources",
        "test_kuberay_volumes_are_declared",
        "test_kuberay_opens_no_port_to_the_world",
        "test_kuberay_sidecar_mode_rules",
        "test_every_head_starts_without_grpc_fork_handlers",
    ),
    "slurm.sbatch": (
        "test_sbatch_is_valid_bash",
        "test_sbatch_directives",
        "test_sbatch_starts_a_head_and_workers",
        "test_sbatch_runs_a_two_node_cluster_with_fake_slurm",
        "test_every_head_starts_without_grpc_fork_handlers",
    ),
    "Dockerfile": ("test_dockerfile_builds_the_cluster_image",),
    "Dockerfile.dockerignore": ("test_dockerignore_keeps_the_context_small",),
    "README.md": ("test_readme_covers_each_platform", "test_readme_links_exist"),
}
WORLD = ("0.0.0.0/0", "::/0")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The CLI contract (ARCHITECTURE.md / the cli module): run --space FILE [--address ADDR]
# [--storage PATH_OR_URI] [--optuna-storage URL] [--name NAME] [--restart].
CLI_FLAGS = ("--space", "--address", "--storage", "--optuna-storage", "--name", "--restart")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ")", "(", ";;"}


# --- helpers ------------------------------------------------------------------------------------


def load_yaml(path: Path) -> list[Any]:
    """All documents of a YAML file (``safe_load_all``), empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def strings(node: Any) -> Iterator[str]:
    """Every string value (and mapping key) anywhere in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def comments(text: str) -> str:
    """The text of a file's ``#`` comment lines, one per line, continuations joined."""
    lines = [line.strip()[1:].strip() for line in text.splitlines() if line.strip().startswith("#")]
    return re.sub(r"\\\n", " ", "\n".join(lines))


def shell_defaults(text: str) -> dict[str, str]:
    """``NAME=${NAME:-default}`` assignments of a shell script, as {name: default}."""
    return dict(re.findall(r"^([A-Z_]+)=\$\{\1:-([^}]*)\}", text, flags=re.M))


def fairsearch_commands(text: str, variables: dict[str, str] | None = None) -> list[list[str]]:
    """The argv (after ``fairsearch``) of every ``fairsearch run --...`` in a text, shell variables filled in."""
    text = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for match in re.finditer(r"(?<![\w/.-])fairsearch run(?= --)", text):
        rest = text[match.end() :].split("\n", 1)[0]
        commands.append(["run", *_shell_words(rest)])
    for argv in commands:
        for i, word in enumerate(argv):
            argv[i] = re.sub(r"\$\{?(\w+)\}?", lambda m: (variables or {}).get(m.group(1), m.group(0)), word)
    return commands


def _shell_words(line: str) -> list[str]:
    for candidate in (line, line.rstrip().rstrip("'\"`")):
        try:
            lexer = shlex.shlex(candidate, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words = []
            for word in lexer:
                if word in SHELL_OPERATORS:
                    break
                words.append(word)
            return words
        except ValueError:
            continue
    raise AssertionError(f"cannot split the command {line!r}")


def contract_parser() -> argparse.ArgumentParser:
    """``fairsearch run`` as the contract defines it."""
    parser = argparse.ArgumentParser(prog="fairsearch")
    run = parser.add_subparsers(dest="command", required=True).add_parser("run")
    run.add_argument("--space", required=True)
    run.add_argument("--address")
    run.add_argument("--storage")
    run.add_argument("--optuna-storage")
    run.add_argument("--name")
    run.add_argument("--restart", action="store_true")
    return parser


def parse_command(argv: list[str], where: str) -> argparse.Namespace:
    """Parses with the contract; fails the test, naming the file, on a flag fairsearch does not have."""
    try:
        args, extra = contract_parser().parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `fairsearch {shlex.join(argv)}` does not parse: {CLI_FLAGS} are the flags")
    assert not extra, f"{where}: `fairsearch {shlex.join(argv)}`: unknown arguments {extra}"
    return args


def commands_in(path: Path) -> list[list[str]]:
    """The fairsearch commands a cluster file shows (comments, YAML values, shell lines, code blocks)."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        sources = [comments(text), *(s for doc in load_yaml(path) for s in strings(doc))]
        return [argv for source in sources for argv in fairsearch_commands(source)]
    if path.name == "README.md":
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        return [argv for block in blocks for argv in fairsearch_commands(block)]
    return fairsearch_commands(text, shell_defaults(text))


def ray_version_pins() -> dict[str, set[str]]:
    """Every Ray version each cluster file names (image tags, rayVersion, pip pins)."""
    pattern = r"rayproject/ray:(\d+\.\d+\.\d+)|ray\[tune\]==(\d+\.\d+\.\d+)|rayVersion: \"?(\d+\.\d+\.\d+)"
    found: dict[str, set[str]] = {}
    for path in (AWS, KUBERAY, DOCKERFILE):
        found[path.name] = {v for groups in re.findall(pattern, path.read_text()) for v in groups if v}
    return found


def kuberay_docs() -> dict[str, list[dict[str, Any]]]:
    """The manifest's documents by kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in load_yaml(KUBERAY):
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def rayjob_pod_specs() -> dict[str, dict[str, Any]]:
    """The head's and each worker group's pod spec, keyed ``head`` / the group name."""
    spec = kuberay_docs()["RayJob"][0]["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


# --- every file ---------------------------------------------------------------------------------


def test_every_cluster_file_is_checked() -> None:
    files = sorted(
        str(p.relative_to(CLUSTER))
        for p in CLUSTER.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    unknown = [f for f in files if f not in CHECKS]
    assert not unknown, (
        f"cluster/{unknown[0]} has no checks: add it to CHECKS in {Path(__file__).name} with tests"
    )
    missing = sorted(set(CHECKS) - set(files))
    assert not missing, f"CHECKS names cluster/{missing[0]}, which does not exist"
    for name, tests in CHECKS.items():
        for test in tests:
            assert callable(globals().get(test)), f"CHECKS[{name!r}] names {test}, which is not a test here"


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.y*ml")), ids=lambda p: p.name)
def test_yaml_parses_and_starts_with_its_command(path: Path) -> None:
    assert load_yaml(path), f"{path.name} holds no YAML document"
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} must start with a comment showing how to run it"


@pytest.mark.parametrize("path", [AWS, KUBERAY, SBATCH, README], ids=lambda p: p.name)
def test_fairsearch_commands_follow_the_cli_contract(path: Path) -> None:
    commands = commands_in(path)
    assert commands, f"{path.name} shows no `fairsearch run` command"
    for argv in commands:
        args = parse_command(argv, path.name)
        space = re.search(r"(?:^|/)search_spaces/([\w.-]+\.ya?ml)$", args.space)
        assert space, f"{path.name}: --space {args.space} is not a file of search_spaces/"
        assert (SPACES / space.group(1)).is_file(), (
            f"{path.name}: --space {args.space}: no search_spaces/{space.group(1)}"
        )
        if path is not README:  # the README also shows single-machine runs
            assert args.address, f"{path.name}: a cluster sweep must join the cluster (--address)"
            assert args.storage, f"{path.name}: a cluster sweep needs --storage that every node can reach"


def test_every_head_starts_without_grpc_fork_handlers() -> None:
    """Each recipe starts its head with ``GRPC_ENABLE_FORK_SUPPORT=0``: with gRPC's fork handlers, the
    head's Ray Client proxy forks a server that dies at once on about one first connection in five
    (ray-project/ray#63202), and ``--address ray://`` then fails."""
    aws = " ".join(load_yaml(AWS)[0]["head_start_ray_commands"])
    assert "GRPC_ENABLE_FORK_SUPPORT=0 ray start --head" in aws, aws
    sbatch = re.sub(r"\\\n\s*", " ", SBATCH.read_text())
    assert re.search(r"^GRPC_ENABLE_FORK_SUPPORT=0 srun [^\n]*ray start --head", sbatch, flags=re.M)
    (head,) = [c for c in rayjob_pod_specs()["head"]["containers"] if c["name"] == "ray-head"]
    assert {"name": "GRPC_ENABLE_FORK_SUPPORT", "value": "0"} in head.get("env", []), head.get("env")


def test_space_files_named_anywhere_exist() -> None:
    for path in (AWS, KUBERAY, SBATCH, README):
        for name in re.findall(r"search_spaces/([\w.-]+\.ya?ml)", path.read_text()):
            assert (SPACES / name).is_file(), f"{path.name} names search_spaces/{name}, which does not exist"


def test_commands_parse_with_the_real_cli() -> None:
    from fairsearch.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_flags = set(subparsers.choices["run"]._option_string_actions)
    missing = [flag for flag in CLI_FLAGS if flag not in run_flags]
    assert not missing, f"fairsearch.cli's `run` lacks {missing}, which the cluster configs use"
    for path in (AWS, KUBERAY, SBATCH, README):
        for argv in commands_in(path):
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{path.name}: fairsearch's CLI rejects `fairsearch {shlex.join(argv)}`")


def test_ray_versions_agree_and_fit_the_project() -> None:
    from packaging.specifiers import SpecifierSet

    pins = ray_version_pins()
    versions = set().union(*pins.values())
    assert len(versions) == 1, f"the cluster files name different Ray versions: {pins}"
    version = versions.pop()
    assert all(pins.values()), f"a cluster file names no Ray version: {pins}"
    pyproject = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'"ray\[[a-z,]*tune[a-z,]*\]([^"]+)"', pyproject)
    assert spec and version in SpecifierSet(spec.group(1)), f"Ray {version} is outside pyproject's {spec}"


# --- AWS cluster launcher -----------------------------------------------------------------------


def test_aws_config_passes_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(AWS)[0]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written: no unknown keys
    validate_config(prepare_config(config))  # as `ray up` sees it, defaults filled in


def test_aws_gpu_workers_and_cpu_head() -> None:
    config = load_yaml(AWS)[0]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must not run trials"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers
    for name, node in workers.items():
        assert node["resources"].get("GPU", 0) >= 1, f"{name} has no GPU"
        assert node.get("min_workers", 0) >= 1, f"{name}: keep a GPU node up so a new sweep sees a GPU"
        assert node["max_workers"] <= config["max_workers"]
    start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "ray start --head" in start


def test_aws_setup_installs_cuda_torch_and_the_repo() -> None:
    config = load_yaml(AWS)[0]
    setup = config["setup_commands"]
    text = "\n".join(setup)
    assert re.search(r"pip install (-q )?torch\b", text), "setup must install torch"
    for cpu_marker in ("whl/cpu", "+cpu", "torch==2.13.0"):
        assert cpu_marker not in text, f"setup installs the CPU torch ({cpu_marker})"
    for command in setup:
        if "torchvision" in command:
            assert "uninstall" in command, f"setup must never install torchvision: {command}"
    assert config["file_mounts"].get("~/fairsearch") == ".", "the repository must be synced to ~/fairsearch"
    assert re.search(r"pip install .*-e \"\$HOME/fairsearch\[postgres\]\"", text)
    image_version = re.search(r"rayproject/ray:([\d.]+)", config["docker"]["image"])
    assert image_version and f"ray[tune]=={image_version.group(1)}" in text, "pin Ray to the image's version"
    assert ".venv" in config["rsync_exclude"] and "results" in config["rsync_exclude"]


def test_aws_opens_no_port_to_the_world() -> None:
    config = load_yaml(AWS)[0]
    for value in strings(config):
        assert not any(cidr in value for cidr in WORLD), f"aws-gpu.yaml opens something to the world: {value}"
    assert not config["provider"].get("security_group", {}).get("IpPermissions"), (
        "use your own security group"
    )
    for name, node in config["available_node_types"].items():
        # Without SecurityGroupIds, Ray's AWS provider creates a group with SSH from 0.0.0.0/0.
        assert node["node_config"].get("SecurityGroupIds"), f"{name} needs SecurityGroupIds"
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    docker = config["docker"]
    options = " ".join(
        docker.get("run_options", [])
        + docker.get("worker_run_options", [])
        + docker.get("head_run_options", [])
    )
    assert not re.search(r"(^|\s)(-p|--publish)(\s|=)", options), "no published container ports"


# --- KubeRay ------------------------------------------------------------------------------------


def test_kuberay_documents() -> None:
    docs = kuberay_docs()
    assert set(docs) == {"PersistentVolumeClaim", "NetworkPolicy", "RayJob"}, set(docs)
    (job,) = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].strip() and spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == next(iter(ray_version_pins()["Dockerfile"]))
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True


def test_kuberay_gpu_workers_and_resources() -> None:
    cluster = kuberay_docs()["RayJob"][0]["spec"]["rayClusterSpec"]
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    head_params = cluster["headGroupSpec"]["rayStartParams"]
    assert head_params.get("num-cpus") == "0", "the head must not run trials"
    for name, pod in rayjob_pod_specs().items():
        for container in pod["containers"]:
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert kind in resources["requests"] and kind in resources["limits"], (
                    f"{name}: {kind} request/limit"
                )
            if name != "head":
                gpus = resources["limits"].get("nvidia.com/gpu")
                assert gpus is not None and int(gpus) >= 1, f"worker group {name} has no nvidia.com/gpu limit"
                assert resources["requests"].get("nvidia.com/gpu") == gpus
    for group in [cluster["headGroupSpec"], *groups]:  # KubeRay's rayStartParams is map[string]string
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]


def test_kuberay_volumes_are_declared() -> None:
    claims = {doc["metadata"]["name"] for doc in kuberay_docs()["PersistentVolumeClaim"]}
    for name, pod in rayjob_pod_specs().items():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: volumeMount {mount['name']} has no volume"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{name}: {volume}"
    mounts = {m["mountPath"] for c in rayjob_pod_specs()["head"]["containers"] for m in c["volumeMounts"]}
    entrypoint = kuberay_docs()["RayJob"][0]["spec"]["entrypoint"]
    (argv,) = fairsearch_commands(entrypoint)
    assert parse_command(argv, KUBERAY.name).space in mounts, "the space file must come from the ConfigMap"
    assert any(entrypoint.startswith(f"cd {m}") for m in mounts), "run from a volume so results/ persists"


def test_kuberay_opens_no_port_to_the_world() -> None:
    docs = kuberay_docs()
    for kind in ("Service", "Ingress", "Route", "Gateway", "HTTPRoute"):
        assert kind not in docs, f"the manifest must not expose the cluster ({kind})"
    cluster = docs["RayJob"][0]["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert cluster.get("authOptions", {}).get("mode") == "token", "Ray token authentication must be on"
    for name, pod in rayjob_pod_specs().items():
        assert not pod.get("hostNetwork"), f"{name} must not use the node's network"
        for container in pod["containers"]:
            for port in container.get("ports", []):
                assert "hostPort" not in port, f"{name} publishes {port} on the node"
    for value in strings(list(docs.values())):
        assert not any(cidr in value for cidr in WORLD), f"the manifest opens something to the world: {value}"
    if cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0") in LOOPBACK:
        return
    # A dashboard on the pod network is allowed only behind a NetworkPolicy with explicit sources.
    head_labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    policies = [
        p["spec"]
        for p in docs.get("NetworkPolicy", [])
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= head_labels.items()
    ]
    assert policies, "a dashboard off loopback needs a NetworkPolicy that selects the head pod"
    for policy in policies:
        assert "Ingress" in policy["policyTypes"]
        for rule in policy["ingress"]:
            assert rule.get("from"), f"an ingress rule without sources admits everyone: {rule}"
            for source in rule["from"]:
                assert "ipBlock" not in source, f"use pod selectors, not address ranges: {source}"
                assert source.get("podSelector", {}).get("matchLabels"), f"name the pods admitted: {source}"


def test_kuberay_sidecar_mode_rules() -> None:
    # KubeRay's ValidateRayJobSpec: SidecarMode needs the head's restartPolicy Never (or unset) and
    # takes no submitter template or config.
    spec = kuberay_docs()["RayJob"][0]["spec"]
    assert spec["submissionMode"] == "SidecarMode"
    assert rayjob_pod_specs()["head"].get("restartPolicy", "Never") == "Never"
    assert "submitterPodTemplate" not in spec and "submitterConfig" not in spec


# --- SLURM --------------------------------------------------------------------------------------


def test_sbatch_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert SBATCH.read_text().startswith("#!/bin/bash\n")


def test_sbatch_directives() -> None:
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = {}
    for i, line in enumerate(lines):
        if line.startswith("#SBATCH"):
            assert i < first_command, f"#SBATCH after the first command is ignored: {line}"
            option = line.split()[1]
            name, _, value = option.partition("=")
            directives[name] = value
    for required in ("--job-name", "--nodes", "--ntasks-per-node", "--cpus-per-task", "--time", "--output"):
        assert required in directives, f"slurm.sbatch needs #SBATCH {required}"
    assert directives["--ntasks-per-node"] == "1", "one Ray node (one ray start) per machine"
    assert any(k in directives for k in ("--gpus-per-task", "--gpus-per-node", "--gres")), "ask for GPUs"


def test_sbatch_starts_a_head_and_workers() -> None:
    text = re.sub(r"\\\n\s*", " ", SBATCH.read_text())
    head = re.search(r"srun [^\n]*ray start --head[^\n]*", text)
    assert head, "the head must start with srun ... ray start --head"
    for flag in ("--node-ip-address=", "--port=", "--num-gpus=", "--dashboard-host=127.0.0.1", "--block"):
        assert flag in head.group(0), f"ray start --head lacks {flag}"
    worker = re.search(r"srun [^\n]*ray start --address=[^\n]*", text)
    assert worker, "workers must start with srun ... ray start --address=<head>"
    for flag in ("--num-gpus=", "--block"):
        assert flag in worker.group(0), f"the workers' ray start lacks {flag}"
    assert "scontrol show hostnames" in text and "hostname --ip-address" in text
    assert "ray.nodes()" in text, "the driver must wait until every node has joined"
    assert "RAY_AUTH_MODE=token" in text and "umask 077" in text, "a private per-job Ray token"
    assert "0.0.0.0" not in text


@pytest.mark.slow
def test_sbatch_runs_a_two_node_cluster_with_fake_slurm(tmp_path: Path) -> None:
    """Runs slurm.sbatch with stand-ins for srun/scontrol: two Ray nodes on this machine, a stub sweep."""
    job_id = f"fstest{os.getpid()}"
    bin_dir, venv_bin, submit = tmp_path / "bin", tmp_path / "venv" / "bin", tmp_path / "submit"
    for folder in (bin_dir, venv_bin, submit):
        folder.mkdir(parents=True)
    real_bin = Path(sys.executable).parent
    scripts = {
        bin_dir
        / "srun": 'while [ $# -gt 0 ]; do case "$1" in -w|-N|-n|-c) shift 2;; -*) shift;; *) break;; esac; done\nexec "$@"',
        bin_dir / "scontrol": "printf 'fake-node-1\\nfake-node-2\\n'",
        venv_bin / "python": f'exec "{sys.executable}" "$@"',
        venv_bin / "ray": f'exec "{real_bin / "ray"}" "$@"',
    }
    stub = venv_bin / "fairsearch"  # records its arguments and what it sees of the cluster
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "import ray\n"
        f"open({str(tmp_path / 'argv')!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "ray.init(address=sys.argv[sys.argv.index('--address') + 1], logging_level='ERROR')\n"
        "alive = sum(node['Alive'] for node in ray.nodes())\n"
        f"json.dump({{'alive': alive, 'auth': os.environ.get('RAY_AUTH_MODE')}}, open({str(tmp_path / 'cluster.json')!r}, 'w'))\n"
    )
    stub.chmod(0o755)
    for path, body in scripts.items():
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    space = tmp_path / "space.yaml"
    space.write_text("name: fake\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VENV": str(tmp_path / "venv"),
        "SPACE": str(space),
        "STORAGE": str(tmp_path / "storage"),
        "RAY_PORT": str(port),
        "INCLUDE_DASHBOARD": "false",
        "WAIT_S": "180",
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "fake-node-[1-2]",
        "SLURM_CPUS_PER_TASK": "1",
        "SLURM_GPUS_PER_TASK": "0",
        "SLURM_SUBMIT_DIR": str(submit),
    }
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "job.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(SBATCH)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=300)
        finally:
            _kill_job(proc.pid, job_id)
    output = log.read_text()
    assert returncode == 0, output[-3000:]
    argv = (tmp_path / "argv").read_text().split("\n")
    head_ip = argv[4].rsplit(":", 1)[0]
    assert argv == [
        "run",
        "--space",
        str(space),
        "--address",
        f"{head_ip}:{port}",
        "--storage",
        str(tmp_path / "storage"),
    ]
    assert json.loads((tmp_path / "cluster.json").read_text()) == {"alive": 2, "auth": "token"}
    assert "2 node(s) in the Ray cluster" in output
    token = submit / "results" / f".slurm-{job_id}" / "auth_token"
    assert not token.exists(), "the job's token must be removed when the job ends"


def _kill_job(pgid: int, job_id: str) -> None:
    """Stops what the fake job started (its process group, then any process of its Ray temp dirs) and
    removes those temp dirs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [p for p in _pids_with(f"/tmp/ray-{job_id}") if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    for folder in Path("/tmp").glob(f"ray-{job_id}*"):
        shutil.rmtree(folder, ignore_errors=True)


def _pids_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


# --- the image ----------------------------------------------------------------------------------


def test_dockerfile_builds_the_cluster_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM rayproject/ray:[\d.]+-py311-gpu$", text, flags=re.M), "a Ray GPU base image"
    for source in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", text, flags=re.M):
        for name in source.split():
            assert (REPO / name).exists(), f"Dockerfile copies {name}, which is not in the repository"
    assert 'pip install --no-cache-dir -e ".[postgres]"' in text
    assert "whl/cpu" not in text and "+cpu" not in text
    for line in text.splitlines():
        if "torchvision" in line and not line.lstrip().startswith("#"):
            assert "uninstall" in line, f"the image must never install torchvision: {line}"
    assert "HF_HUB_OFFLINE=1" in text


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*", "start from nothing, then allow what the image needs"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied = {
        n
        for src in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
        for n in src.split()
    }
    assert copied <= allowed, f"the Dockerfile copies {copied - allowed}, which the context leaves out"
    assert not allowed & {".venv", "results", ".git"}


# --- README -------------------------------------------------------------------------------------


def test_readme_covers_each_platform() -> None:
    text = README.read_text()
    for needle in (
        "ray up",
        "kubectl apply -f cluster/kuberay-rayjob.yaml",
        "sbatch cluster/slurm.sbatch",
        "HF_HUB_OFFLINE=1",
        "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct",
        "--storage",
        "optuna_storage: postgresql://",
        "--optuna-storage",
        "model:",
        "data:",
        "benchmarks/sampler_cost.py",
    ):
        assert needle in text, f"cluster/README.md should cover {needle!r}"
    for sampler in ("tpe", "nsgaii", "random", "gp"):
        assert re.search(rf"\|[^\n]*\b{sampler}\b[^\n]*\|", text), f"the scale table lacks {sampler}"


def test_readme_links_exist() -> None:
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (CLUSTER / target).resolve().exists(), (
                f"cluster/README.md links to {target}, which does not exist"
            )
    for name in re.findall(r"\bcluster/([\w.-]+)", text):
        assert (CLUSTER / name).exists(), f"cluster/README.md names cluster/{name}, which does not exist"
