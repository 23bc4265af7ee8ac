"""Run an OCF resource agent unchanged (the agents of the resource-agents package).

Arguments:

- ``agent``: ``"provider/type"``, e.g. ``"heartbeat/IPaddr2"``, ``"heartbeat/Dummy"``;
  the program is ``$OCF_ROOT/resource.d/<provider>/<type>``.
- ``params``: the agent's parameters, ``{"ip": "10.0.0.100", "cidr_netmask": "24"}``,
  passed as ``OCF_RESKEY_<name>`` (true/false for booleans).
- ``ocf_root``: default ``/usr/lib/ocf``.
- ``timeout``: seconds for each agent call (default 20), also passed to the agent
  as ``OCF_RESKEY_CRM_meta_timeout`` in milliseconds, as Pacemaker does.
- ``instance``: the ``OCF_RESOURCE_INSTANCE`` name. Agents name state files after it,
  so two resources with the same agent need different instances; the default is
  the agent type plus a short hash of the params.

start/stop/promote/demote succeed on exit code 0 (stop also on 7, "not running");
alive runs ``monitor``: 0 (running) and 8 (running as master) are alive, 7 (not
running) is not, anything else is an error naming the OCF code and the agent's
``ocf-exit-reason`` or last line of stderr.

Checked with the config: the agent exists and is executable; its ``meta-data``
declares every parameter given and all required ones are given; and the agent does
not call Pacemaker's tools (crm_attribute, crm_master, attrd_updater, ...), which
HA-DO does not provide: about 31 of the 141 heartbeat agents do (Stateful, galera,
pgsql, mysql, redis, ...).

No other() (docs/plugins.rst): OCF has no action that asks whether the resource runs
on another machine (``monitor`` speaks for this node only), so hado cannot ask an
agent before it starts it. For a VIP, the built-in ``ipaddr`` has one (duplicate
address detection); for a service at a fixed address, an app monitor ``tcp_port`` with
``"other": true`` asks whether its port answers elsewhere.
"""

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from hado.plugin import PluginError, last_line, run

OCF_ROOT = "/usr/lib/ocf"
OCF_SUCCESS, OCF_NOT_RUNNING, OCF_RUNNING_MASTER = 0, 7, 8
OCF_CODES = {
    0: "OCF_SUCCESS", 1: "OCF_ERR_GENERIC", 2: "OCF_ERR_ARGS", 3: "OCF_ERR_UNIMPLEMENTED",
    4: "OCF_ERR_PERM", 5: "OCF_ERR_INSTALLED", 6: "OCF_ERR_CONFIGURED", 7: "OCF_NOT_RUNNING",
    8: "OCF_RUNNING_MASTER", 9: "OCF_FAILED_MASTER",
}
PACEMAKER_TOOLS = ("crm_attribute", "crm_master", "attrd_updater", "crm_resource", "crm_node",
                   "cibadmin", "crm_mon", "crm_failcount", "crm_standby", "crm_ticket",
                   "stonith_admin", "ocf_promotion_score")
PACEMAKER_RE = re.compile(r"\b(" + "|".join(PACEMAKER_TOOLS) + r")\b")


def start(agent, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    _expect_success("start", agent, params, ocf_root, timeout, instance)


def stop(agent, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    _expect_success("stop", agent, params, ocf_root, timeout, instance, also=(OCF_NOT_RUNNING,))


def alive(agent, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    proc = _call("monitor", agent, params, ocf_root, timeout, instance)
    if proc.returncode in (OCF_SUCCESS, OCF_RUNNING_MASTER):
        return True
    if proc.returncode == OCF_NOT_RUNNING:
        return False
    raise PluginError(_failure("monitor", agent, proc))


def promote(agent, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    _expect_success("promote", agent, params, ocf_root, timeout, instance)


def demote(agent, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    _expect_success("demote", agent, params, ocf_root, timeout, instance)


def validate(agent=None, params=None, ocf_root=OCF_ROOT, timeout=20, instance=None):
    if not isinstance(agent, str) or not re.fullmatch(r"[\w.+-]+/[\w.+-]+", agent) or ".." in agent:
        return [f"agent {agent!r} must be 'provider/type', e.g. 'heartbeat/IPaddr2'"]
    if params is not None and not isinstance(params, dict):
        return [f"params must be an object of the agent's parameters, not {params!r:.60}"]
    params = params or {}
    path = _path(agent, ocf_root)
    if not path.is_file():
        return [f"OCF agent {agent}: {path} does not exist (is resource-agents installed?)"]
    if not os.access(path, os.X_OK):
        return [f"OCF agent {agent}: {path} is not executable"]
    errors = []
    tools = _pacemaker_tools(path)
    if tools:
        errors.append(f"OCF agent {agent} calls Pacemaker's {', '.join(tools)}, "
                      f"which HA-DO does not provide")
    try:
        proc = _call("meta-data", agent, params, ocf_root, min(timeout, 10), instance)
    except PluginError as exc:
        return errors + [f"OCF agent {agent}: meta-data failed: {exc}"]
    try:
        root = ElementTree.fromstring(proc.stdout)
    except ElementTree.ParseError as exc:
        return errors + [f"OCF agent {agent}: meta-data is not XML ({exc}); {last_line(proc)}"]
    declared = {p.get("name"): p.get("required") == "1" for p in root.iter("parameter")}
    for name, required in sorted(declared.items()):
        if required and name not in params:
            errors.append(f"OCF agent {agent}: missing required parameter '{name}'")
    for name in sorted(params):
        if name not in declared:
            errors.append(f"OCF agent {agent}: unknown parameter '{name}' "
                          f"(it takes: {', '.join(sorted(declared)) or 'none'})")
    return errors


# -- helpers ------------------------------------------------------------------------------

def _path(agent, ocf_root):
    provider, _, rtype = agent.partition("/")
    return Path(ocf_root) / "resource.d" / provider / rtype


def _call(action, agent, params, ocf_root, timeout, instance):
    """Run the agent with one action and the OCF environment; the CompletedProcess."""
    params = params or {}
    provider, _, rtype = agent.partition("/")
    if instance is None:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
        instance = f"{rtype}-{digest[:8]}"
    env = {
        "OCF_ROOT": ocf_root,
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "0",
        "OCF_RESOURCE_INSTANCE": instance,
        "OCF_RESOURCE_TYPE": rtype,
        "OCF_RESOURCE_PROVIDER": provider,
        "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000)),
    }
    for name, value in params.items():
        env[f"OCF_RESKEY_{name}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return run([str(_path(agent, ocf_root)), action], timeout=timeout, env=env, check=False)


def _expect_success(action, agent, params, ocf_root, timeout, instance, also=()):
    proc = _call(action, agent, params, ocf_root, timeout, instance)
    if proc.returncode != OCF_SUCCESS and proc.returncode not in also:
        raise PluginError(_failure(action, agent, proc))


def _failure(action, agent, proc):
    code = proc.returncode
    name = OCF_CODES.get(code, "unknown OCF exit code")
    reasons = [line.split(":", 1)[1].strip() for line in (proc.stderr or "").splitlines()
               if line.startswith("ocf-exit-reason:")]
    return f"{agent} {action}: exit code {code} ({name}): {reasons[-1] if reasons else last_line(proc)}"


def _pacemaker_tools(path):
    """The Pacemaker tools a shell or Python agent calls (comment lines skipped)."""
    try:
        text = path.read_bytes()[:1_000_000].decode("utf-8", errors="replace")
    except OSError:
        return []
    if "\0" in text[:1000]:  # a compiled agent: nothing to read
        return []
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for tool in PACEMAKER_RE.findall(line):
            if tool not in found:
                found.append(tool)
    return found
