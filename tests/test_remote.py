"""What a SLURM job makes, passed from the executor to the job's Snakemake in its environment
(ltpa.jobs.remote, the ltpa-slurm executor's get_job_exec_prefix); in-process."""

import re
import subprocess
from types import SimpleNamespace

import pytest

from ltpa.jobs.remote import ENV, decode, encode, export_command, outputs_from_environment
from snakemake_executor_plugin_ltpa_slurm import data_outputs

PATHS = ["/data/study/s1/s1.pkl", "/data/study/s 2/it's \"odd\"/scale33.npy",
         "/data/study/s3/é.npy"]


def test_outputs_survive_the_shell_and_come_back(tmp_path):
    word = encode(PATHS * 50)
    assert re.fullmatch(r"[A-Za-z0-9_=-]+", word)
    assert decode(word) == set(PATHS)
    # through a real shell, as the SLURM job's command line runs it
    proc = subprocess.run(["sh", "-c", f"{export_command(PATHS)} && printenv {ENV}"],
                          capture_output=True, text=True, check=True)
    assert decode(proc.stdout.strip()) == set(PATHS)
    assert outputs_from_environment({ENV: word}) == set(PATHS)
    assert outputs_from_environment({}) is None and outputs_from_environment({ENV: ""}) is None


@pytest.mark.parametrize("bad", ["not base64!", encode([]).replace("e", "Q") + "xx", "eJwLAAAA"])
def test_a_damaged_value_is_an_error_naming_the_variable(bad):
    with pytest.raises(ValueError, match=ENV):
        decode(bad)
    with pytest.raises(ValueError, match=ENV):
        decode(encode(PATHS)[:-8])


def _job(rule, *outputs):
    return SimpleNamespace(rule=SimpleNamespace(name=rule), output=list(outputs),
                           is_group=lambda: False)


def test_only_a_job_of_data_rules_names_its_outputs():
    """A batch of index/label jobs names their outputs; one QC job in it (it needs the whole
    study) and the job's Snakemake reads every scan."""
    data = [_job("index_streamlines", "/s/s1.pkl"), _job("label_streamlines", "/s/a.npy"),
            _job("termination_patterns", "/s/a.patterns-r1.npz")]
    group = SimpleNamespace(jobs=data, is_group=lambda: True)
    assert data_outputs(group) == ["/s/s1.pkl", "/s/a.npy", "/s/a.patterns-r1.npz"]
    assert data_outputs(data[0]) == ["/s/s1.pkl"]
    with_qc = SimpleNamespace(jobs=data + [_job("qc_scan", "/s/q.tsv", "/s/l.tsv")],
                              is_group=lambda: True)
    assert data_outputs(with_qc) is None
    assert data_outputs(_job("qc_summary", "/s/summary.tsv")) is None
