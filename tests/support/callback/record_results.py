# Test support: write every task result of a play to the JSON file named by
# VIRTPLANE_TEST_RESULTS, so tests assert on what ansible-playbook really returned.

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: record_results
type: aggregate
short_description: write task results to a JSON file (virtplane.kvm tests)
description:
  - Test support only. Writes each task's result to the file named by E(VIRTPLANE_TEST_RESULTS), with
    the seconds from the task's start to that result as C(_duration_s) (what the benchmarks read).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self.results = []
        self._task_started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started = time.monotonic()

    def _add(self, result, status):
        data = dict(result._result)
        data["_status"] = status
        data["_duration_s"] = round(time.monotonic() - self._task_started, 4)
        data["failed"] = status == "failed"
        self.results.append({"task": result._task.get_name(), "host": result._host.get_name(), "result": data})

    def v2_runner_on_ok(self, result, **kwargs):
        self._add(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._add(result, "failed")

    def v2_runner_on_skipped(self, result, **kwargs):
        self._add(result, "skipped")

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._add(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("VIRTPLANE_TEST_RESULTS")
        if path:
            with open(path, "w") as handle:
                json.dump(self.results, handle, default=str)
