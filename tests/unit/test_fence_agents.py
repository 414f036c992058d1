"""What a fence agent says reaches messages on one line with its secret masked, whatever the secret holds."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.fence import _agents

SECRET = "pa\u2028ss"


@pytest.mark.parametrize("said", [
    "Failed: unable to connect with password=%s" % SECRET,
    "line one\npassword %s\r\nline three" % SECRET,
    "x" * 290 + SECRET,  # where the cut at 300 characters would leave a part of it
])
def test_the_secret_is_masked_before_the_text_is_split_or_cut(said):
    shown = _agents._masked(said, SECRET)
    # split first, the secret's two halves would have been shown on either side of a " / "
    assert "pa / ss" not in shown and not shown.endswith("pa") and "********" in shown
    assert SECRET not in shown and "\n" not in shown and len(shown) <= 300


def test_an_agent_that_cannot_run_says_so_without_its_secret(tmp_path, monkeypatch):
    program = tmp_path / "fence_ipmilan"
    program.write_text("#!/bin/sh\nwhile read -r line; do echo \"rejected: $line\" >&2; done\nexit 1\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    agent = _agents.agent("ipmilan", "hv1", {"address": "10.0.0.5", "username": "admin"}, secret="hunter2-secret")
    with pytest.raises(_agents.FenceError) as failed:
        agent.status()
    assert "hunter2-secret" not in str(failed.value) and "********" in str(failed.value)
    assert str(failed.value).startswith("Fence agent of host hv1 (ipmilan agent at 10.0.0.5:623): status failed: ")
