"""Fence a node by running a command: a BMC power-off, a hypervisor, a cloud CLI.

Arguments: ``command``, an argv list (no shell) in which every ``{node}`` is replaced
by the name of the node to fence; ``timeout``, seconds (default 30). Exit code 0 means
the node is fenced; anything else, or the timeout, is a failure, and hado does not
take over from that node.

Power a node off through its BMC with IPMI (the password in a root-only file)::

    "fence": {"plugin": "fence_command", "args": {"command":
        ["ipmitool", "-I", "lanplus", "-H", "bmc-{node}", "-U", "admin",
         "-f", "/etc/hado/ipmi.pass", "chassis", "power", "off"]}}

Or destroy a virtual machine named after the node::

    "fence": {"plugin": "fence_command", "args": {"command": ["virsh", "destroy", "{node}"]}}

The command must only return 0 once the node is really off: ``chassis power off``
does that, a ``shutdown`` over ssh does not (the node may hang on the way down).
"""

from hado.plugin import PluginError, run


def fence(node, command, timeout=30):
    argv = [str(part).replace("{node}", node) for part in command]
    try:
        run(argv, timeout=timeout)
    except PluginError as exc:
        raise PluginError(f"fencing {node} failed: {exc}") from None


def validate(command=None, timeout=30):
    errors = []
    if not isinstance(command, list) or not command or not all(isinstance(p, str) for p in command):
        errors.append(f"command {command!r:.80} must be a non-empty list of strings (an argv, no shell)")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        errors.append(f"timeout {timeout!r} must be seconds > 0")
    return errors
