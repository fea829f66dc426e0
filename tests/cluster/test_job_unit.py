"""Fast checks of the pure job logic: no cluster, no SSH.

Shell text is checked by the real parsers (bash -n, dash -n) and, where
argv boundaries matter, by running it under bash with the runtime replaced by
a shell function that prints its arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import remote_scripts
from cluster import tasks as slurm
from cluster.batch_script import render_batch_script
from cluster.job import (
    CONTAINER_RUNTIMES,
    JobSpec,
    array_task_ids,
    image_path,
    merge_options,
    parse_job_file,
    time_limit_minutes,
    validate,
)
from cluster.job_error import JobError
from cluster.registry import cached_image_name, registry_credentials
from cluster.slurm_answers import expand_output_pattern, parse_sbatch_parsable, sbatch_error_line

PROJECT = Path(__file__).resolve().parents[2]
NASTY = """printf '<%s>\\n' "it's" 'two  spaces' '$HOME' "say \\"hi\\"" 'a;b|c' `echo x`"""


def spec(**changes: object) -> JobSpec:
    base = JobSpec(
        command="python train.py",
        image="nvcr.io/nvidia/pytorch:24.05-py3",
        cache_dir="/shared/sif",
        account="lab",
        partition="gpu",
        time="01:00:00",
        gpus=1,
    )
    return validate(replace(base, **changes))  # type: ignore[arg-type]


def syntax_ok(text: str, shell: str = "bash") -> bool:
    return subprocess.run([shell, "-n"], input=text, text=True).returncode == 0


# -- time limits, arrays ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("90", 90),
        ("5:30", 6),
        ("01:00:00", 60),
        ("36:00:00", 2160),
        ("1-0", 1440),
        ("1-02:30", 1590),
        ("2-00:00:01", 2881),
        ("0", 0),
        ("UNLIMITED", None),
    ],
)
def test_slurm_time_forms_are_read_as_slurm_reads_them(text: str, minutes: int | None) -> None:
    assert time_limit_minutes(text) == minutes


@pytest.mark.parametrize(
    "text", ["", "1:2:3:4", "1-", "-5", "abc", "1:60", "00:60:00", "1-24", "1-2:3:4:5", "1h"]
)
def test_malformed_time_limits_name_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(JobError, match=r"^--time: '.*' is not a Slurm time limit \(MM, MM:SS"):
        time_limit_minutes(text)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("0-2", [0, 1, 2]),
        ("1,3,5-7", [1, 3, 5, 6, 7]),
        ("0-15:4", [0, 4, 8, 12]),
        ("0-9%2", list(range(10))),
        ("7", [7]),
    ],
)
def test_array_specs(text: str, ids: list[int]) -> None:
    assert array_task_ids(text) == ids


@pytest.mark.parametrize("text", ["3-1", "a", "1-2:0", "0-2%x", "", "1,,2", "0-2%"])
def test_bad_array_specs(text: str) -> None:
    with pytest.raises(JobError, match=r"^--array: "):
        array_task_ids(text)


# -- job file and flags ---------------------------------------------------------------


def test_flags_override_the_job_file_and_absent_flags_do_not() -> None:
    file_options = {"name": "from-file", "gpus": 2, "time": "10", "modules": ["cuda/12"]}
    merged = merge_options(
        file_options, {"gpus": "4", "name": None, "modules": [], "account": "lab"}, "job.yaml"
    )
    assert (merged.name, merged.gpus, merged.time, merged.modules, merged.account) == (
        "from-file", 4, "10", ("cuda/12",), "lab",
    )  # fmt: skip


def test_unknown_job_file_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(JobError, match=r"^job.yaml: unknown key 'gpu' \(known: command, image"):
        merge_options({"gpu": 1}, {}, "job.yaml")


def test_job_file_type_errors_name_file_and_key() -> None:
    with pytest.raises(JobError, match=r"^job.yaml: 'gpus' must be a whole number, not 'two'$"):
        merge_options({"gpus": "two"}, {}, "job.yaml")
    with pytest.raises(JobError, match=r"^job.yaml: 'command' must be a string or a non-empty"):
        merge_options({"command": {"a": 1}}, {}, "job.yaml")


def test_job_file_times_are_not_read_as_base_60_or_octal_numbers() -> None:
    # Plain YAML 1.1 makes 1:30:00 the integer 5400 and 010 the integer 8.
    options = parse_job_file("time: 1:30:00\ncpus: 010\ngpus: 2\n", "job.yaml")
    assert options == {"time": "1:30:00", "cpus": "010", "gpus": 2}
    merged = merge_options(options, {}, "job.yaml")
    assert (merged.time, merged.cpus) == ("1:30:00", 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "should hold a mapping"), ("a: [1\n", "is not valid YAML")],
)
def test_job_files_that_are_not_job_files(text: str, message: str) -> None:
    with pytest.raises(JobError, match=message):
        parse_job_file(text, "job.yaml")


@pytest.mark.parametrize("name", ["slurm-jupyter.yaml", "slurm-venv.yaml"])
def test_the_jupyter_and_venv_examples_render_valid_scripts(name: str) -> None:
    text = (PROJECT / "examples" / name).read_text()
    job = merge_options(parse_job_file(text, name), {}, name)
    for jupyter in (True, False):
        if jupyter or job.command:
            validate(job, command_required=not jupyter)
            assert syntax_ok(render_batch_script(job, jupyter=jupyter).text)


def test_the_shipped_example_job_file_renders_a_valid_script() -> None:
    text = (PROJECT / "examples" / "slurm-job.yaml").read_text()
    job = validate(merge_options(parse_job_file(text, "example"), {}, "example"))
    script = render_batch_script(job).text
    assert syntax_ok(script)
    assert "#SBATCH --gres=gpu:2\n" in script
    assert "#SBATCH --time=0-04:00:00\n" in script
    assert "apptainer exec --nv" in script


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": ""}, "--command: required"),
        ({"image": ""}, "--image: required"),
        ({"runtime": "docker"}, "--runtime: 'docker' is not one of apptainer, singularity"),
        ({"gpus": -1}, "--gpus: must be 0 or more, not -1"),
        ({"cpus": 0}, "--cpus: must be 1 or more, not 0"),
        ({"memory": "lots"}, "--memory: 'lots' should be a number with K, M, G or T"),
        ({"account": "a b"}, "--account: 'a b' may hold"),
        ({"partition": "gpu;rm"}, "--partition: 'gpu;rm' is not a partition name"),
        ({"error": 'e"rr'}, "--error: 'e\"rr' goes on an #SBATCH line"),
        ({"sbatch": ("exclusive",)}, "--sbatch: 'exclusive' should be one sbatch option"),
        ({"sbatch": ("--x\n#SBATCH --y",)}, "--sbatch: "),
        ({"modules": ("cuda 12",)}, "--module: 'cuda 12' is not a module name"),
        ({"binds": ("/a:relative",)}, "--bind: '/a:relative': the container side must be"),
        ({"code": "a\nb"}, "--code: path contains a newline"),
        ({"runtime": "none"}, "--image: 'nvcr.io/nvidia/pytorch:24.05-py3' with --runtime none,"
                              " which runs no container"),
        ({"runtime": "none", "image": "", "binds": ("/a",)}, "--bind: --runtime none runs no"),
        ({"wheelhouse": "/wh"}, "--wheelhouse: '/wh' without --requirements"),
        ({"requirements": "r", "wheelhouse": "/w:h"}, "--wheelhouse: '/w:h' is bound into"),
    ],
)
def test_each_bad_option_is_one_line_naming_it(changes: dict[str, object], message: str) -> None:
    with pytest.raises(JobError) as failure:
        spec(**changes)
    assert str(failure.value).startswith(message)
    assert "\n" not in str(failure.value)


# -- scripts ------------------------------------------------------------------------------


def test_apptainer_script_carries_every_requested_option() -> None:
    job = spec(
        name="train",
        qos="high",
        cpus=8,
        memory="64G",
        gpus=2,
        array="0-3%2",
        output="/scratch/me/%x-%A_%a.out",
        error="/scratch/me/%x-%A_%a.err",
        sbatch=("--constraint=a100", "--mail-type=END"),
        code="~/src/exp",
        data="/project/data",
        output_dir="runs",
        binds=("/opt/licenses:/licenses", "/etc/ssl/certs"),
        modules=("apptainer/1.2", "cuda/12.2"),
    )
    script = render_batch_script(job).text
    assert syntax_ok(script)
    assert script.splitlines()[:13] == [
        "#!/bin/bash",
        "#SBATCH --job-name=train",
        "#SBATCH --account=lab",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=high",
        "#SBATCH --time=01:00:00",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64G",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --array=0-3%2",
        "#SBATCH --output=/scratch/me/%x-%A_%a.out",
        "#SBATCH --error=/scratch/me/%x-%A_%a.err",
        "#SBATCH --constraint=a100",
    ]
    loads = [line for line in script.splitlines() if line.startswith("if ! module load")]
    assert loads == ['if ! module load apptainer/1.2 2>"$wb_modules"; then',
                     'if ! module load cuda/12.2 2>"$wb_modules"; then']
    assert "set -u" not in script  # Lmod's module function trips over it
    assert (
        "apptainer exec --nv \\\n"
        '  --bind "$HOME"/src/exp:/workspace/code \\\n'
        "  --bind /project/data:/workspace/data \\\n"
        '  --bind "$HOME"/runs:/workspace/output \\\n'
        "  --bind /opt/licenses:/licenses \\\n"
        "  --bind /etc/ssl/certs:/etc/ssl/certs \\\n"
        "  --pwd /workspace/code \\\n"
        "  /shared/sif/nvcr.io_nvidia_pytorch_24.05-py3.sif \\\n"
        "  sh -c 'python train.py'\n"
    ) in script


def test_singularity_without_nv_and_the_default_log_path() -> None:
    script = render_batch_script(spec(runtime="singularity", nv=False, gpus=0)).text
    assert syntax_ok(script)
    assert "singularity exec \\\n" in script and "--nv" not in script
    assert "--gres" not in script
    # Relative to $HOME, where submit runs sbatch.
    assert "#SBATCH --output=.workbench/slurm/logs/%x-%j.out\n" in script


def test_charliecloud_script_uses_ch_run_binds_and_a_separator() -> None:
    script = render_batch_script(
        spec(runtime="charliecloud", image="/images/busybox", code="/src", data="/data")
    ).text
    assert syntax_ok(script)
    assert (
        "ch-run \\\n  -b /src:/workspace/code \\\n  -b /data:/workspace/data \\\n"
        "  --cd /workspace/code \\\n  /images/busybox -- \\\n  sh -c 'python train.py'\n"
    ) in script


def test_staging_and_requirements_use_scratch_with_a_tmp_fallback() -> None:
    script = render_batch_script(
        spec(stage_data="/project/data.tar", requirements="~/src/exp/requirements.txt")
    ).text
    assert syntax_ok(script)
    assert 'scratch="$SLURM_TMPDIR/workbench"' in script
    assert 'scratch="/tmp/workbench-$(id -un)-$SLURM_JOB_ID"' in script
    assert 'tar -xf /project/data.tar -C "$scratch"/data' in script
    assert 'cp -- "$HOME"/src/exp/requirements.txt "$scratch"/requirements.txt' in script
    assert '--bind "$scratch"/data:/workspace/data' in script
    assert "python3 -m venv --system-site-packages" in script


def test_runtime_none_needs_no_image_and_pulls_nothing() -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    job = spec(runtime="none", image="", modules=("python/3.11",), requirements="r.txt",
               wheelhouse="/project/wheels")
    script = render_batch_script(job).text
    assert syntax_ok(script)
    assert "apptainer" not in script and "ch-run" not in script
    assert 'if ! module load python/3.11 2>"$wb_modules"; then' in script
    assert "/etc/profile.d/lmod.sh" in script  # where a batch shell finds `module`
    with pytest.raises(Exit) as failure:
        slurm.pull(Context(), image="nvcr.io/nvidia/x:1", runtime="none")
    assert str(failure.value.message) == (
        "slurm.pull: --runtime: 'none' is not one of apptainer, singularity, charliecloud;"
        " --runtime none runs no container, so there is nothing to pull")


def run_runtime_line_under_bash(job: JobSpec) -> list[str]:
    """The argv the batch script hands the runtime, as bash itself splits it."""
    script = render_batch_script(job).text
    probe = f"{job.runtime}() {{ printf '%s\\0' \"$@\"; }}\nSLURM_JOB_ID=7\n{script}"
    out = subprocess.run(["bash", "-c", probe], capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


def test_a_command_string_reaches_the_container_shell_byte_for_byte() -> None:
    argv = run_runtime_line_under_bash(spec(command=NASTY, runtime="apptainer"))
    assert argv[-3:] == ["sh", "-c", NASTY]


def test_a_command_list_reaches_the_container_word_for_word() -> None:
    words = ("printf", "%s\\n", "it's", "two  spaces", "$HOME", 'say "hi"', "`id`", "")
    argv = run_runtime_line_under_bash(spec(command=words, runtime="singularity"))
    assert argv[-len(words) :] == list(words)


# -- names, ids, Slurm's answers ----------------------------------------------------------


def test_cached_image_names_and_paths() -> None:
    assert cached_image_name("nvcr.io/nvidia/pytorch:24.05-py3", "apptainer") == (
        "nvcr.io_nvidia_pytorch_24.05-py3.sif"
    )
    assert cached_image_name("docker://busybox", "charliecloud") == "busybox_latest"
    assert image_path(spec(image="/abs/image.sif")) == "/abs/image.sif"
    assert image_path(spec(image="docker://ubuntu:22.04")) == "/shared/sif/ubuntu_22.04.sif"


def test_sbatch_messages_become_one_line() -> None:
    stderr = (
        "sbatch: error: Batch job submission failed: "
        "Invalid account or account/partition combination specified\n"
    )
    assert sbatch_error_line(stderr) == (
        "Batch job submission failed: Invalid account or account/partition combination specified"
    )
    two = "sbatch: error: first\nsbatch: error: second\n"
    assert sbatch_error_line(two) == "first / second"
    assert parse_sbatch_parsable("42\n") == "42"
    assert parse_sbatch_parsable("42;cluster-a\n") == "42"
    with pytest.raises(JobError):
        parse_sbatch_parsable("Submitted batch job 42")


def test_output_patterns_for_jobs_that_left_the_queue() -> None:
    assert expand_output_pattern("logs/%x-%j.out", "12", "train", "me") == "logs/train-12.out"
    assert expand_output_pattern("/s/%u/%x-%A_%a.out", "12_3", "t", "me") == "/s/me/t-12_3.out"
    assert expand_output_pattern("100%%-%j", "5", "n", "u") == "100%-5"
    with pytest.raises(JobError, match="%N cannot be resolved"):
        expand_output_pattern("%N.out", "5", "n", "u")


def test_registry_credentials_prefer_explicit_ones_and_keep_the_ngc_key_on_nvcr() -> None:
    env = {"NGC_API_KEY": "nvapi-k"}
    assert registry_credentials("apptainer", "nvcr.io/nvidia/x:1", env) == (
        "$oauthtoken", "nvapi-k",
    )  # fmt: skip
    assert registry_credentials("apptainer", "docker.io/library/x:1", env) is None
    explicit = {**env, "SINGULARITY_DOCKER_USERNAME": "u", "SINGULARITY_DOCKER_PASSWORD": "p"}
    assert registry_credentials("singularity", "nvcr.io/nvidia/x:1", explicit) == ("u", "p")
    charlie = {"CH_IMAGE_USERNAME": "cu", "CH_IMAGE_PASSWORD": "cp"}
    assert registry_credentials("charliecloud", "quay.io/x:1", charlie) == ("cu", "cp")
    with pytest.raises(JobError, match="newline"):
        registry_credentials("apptainer", "nvcr.io/x:1", {"NGC_API_KEY": "a\nb"})


# -- the remote snippets ------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_every_remote_snippet_parses_in_bash_and_posix_sh(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    job = spec(stage_data="d.tar", requirements="r.txt", output="logs/o-%j.out", error="e/err")
    snippets = [
        remote_scripts.submit_snippet(job),
        remote_scripts.status_snippet("12_3"),
        remote_scripts.logs_locate_snippet("12", "~/.workbench/slurm"),
        remote_scripts.cancel_snippet("12"),
        remote_scripts.jupyter_poll_snippet("12", "~/.workbench/slurm"),
        remote_scripts.submit_snippet(spec(runtime="none", image="", requirements="r.txt",
                                           wheelhouse="wh", modules=("python/3.11",))),
        *(remote_scripts.pull_snippet(rt, "nvcr.io/nvidia/x:1", "~/sif")
          for rt in CONTAINER_RUNTIMES),
    ]
    for snippet in snippets:
        assert syntax_ok(snippet.text, shell), snippet


STANDIN_APPTAINER = """#!/bin/sh
# Stand-in for apptainer, which Debian does not package: enough of `pull` to
# exercise the pull snippet's own logic. Writes part of the file, then fails
# when asked to, as a real pull does midway.
[ "$1" = pull ] && [ "$2" = --disable-cache ] || exit 64
printf 'image of %s for %s\\n' "$4" "${APPTAINER_DOCKER_USERNAME:-anonymous}" > "$3"
[ "${APPTAINER_DOCKER_PASSWORD:-}" = "nvapi-good" ] && exit 0
echo "INFO:    Converting OCI blobs to SIF format" >&2
echo "FATAL:   While making image from oci registry: unauthorized: authentication required" >&2
exit 255
"""


def run_pull_snippet(tmp_path: Path, password: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "apptainer").write_text(STANDIN_APPTAINER)
    (bin_dir / "apptainer").chmod(0o755)
    snippet = remote_scripts.pull_snippet("apptainer", "nvcr.io/nvidia/pytorch:24.05-py3", "~/sif")
    return subprocess.run(
        ["sh", "-c", snippet.text],
        input=f"$oauthtoken\n{password}\n",
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": f"{bin_dir}:/usr/bin:/bin"},
    )


def test_pull_snippet_writes_a_temp_name_renames_once_and_cleans_up_on_failure(
    tmp_path: Path,
) -> None:
    failed = run_pull_snippet(tmp_path, "nvapi-bad")
    assert failed.returncode == 4
    assert failed.stderr.strip() == (
        "FATAL:   While making image from oci registry: unauthorized: authentication required"
    )
    assert os.listdir(tmp_path / "sif") == []  # the half-written pull is gone

    pulled = run_pull_snippet(tmp_path, "nvapi-good")
    final = tmp_path / "sif" / "nvcr.io_nvidia_pytorch_24.05-py3.sif"
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == f"pulled {final}"
    assert os.listdir(tmp_path / "sif") == [final.name]
    # Credentials reached the tool through its environment, from stdin.
    assert final.read_text() == (
        "image of docker://nvcr.io/nvidia/pytorch:24.05-py3 for $oauthtoken\n"
    )

    again = run_pull_snippet(tmp_path, "nvapi-good")
    assert again.stdout.strip() == f"present {final}"


def test_dry_run_needs_no_host_and_other_tasks_do(capsys: pytest.CaptureFixture[str]) -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    slurm.submit(Context(), command="true", image="/x.sif", dry_run=True)
    assert capsys.readouterr().out.startswith("#!/bin/bash\n")
    with pytest.raises(Exit, match=r"needs the login node: fab -H user@login-node slurm.status"):
        slurm.status(Context(), "12")


def test_missing_real_parts_skip_locally_and_fail_where_ci_requires_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import slurm_login_node as login_node

    monkeypatch.setattr(login_node, "missing_real_parts", lambda: ["/usr/sbin/slurmctld"])
    monkeypatch.delenv("WORKBENCH_REQUIRE_REAL_PARTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs: /usr/sbin/slurmctld"):
        login_node.require_real_parts()
    monkeypatch.setenv("WORKBENCH_REQUIRE_REAL_PARTS", "1")
    with pytest.raises(pytest.fail.Exception, match="WORKBENCH_REQUIRE_REAL_PARTS=1"):
        login_node.require_real_parts()
