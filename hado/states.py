"""The names of node, app and resource states. A leaf module: no imports.

Each state has a one-line description, shown by ``hado status --help`` and the docs.
"""

# App roles, as reported in the state document (apps.<app>.role).
ACTIVE = "active"        # every resource of the app runs here
STANDBY = "standby"      # nothing of the app runs here (clones excepted)
STARTING = "starting"    # the election chose this node; resources are starting
STOPPING = "stopping"    # resources are stopping (lost the election, quorum, or health)
FAILED = "failed"        # the app failed here; stopped, not eligible until cleanup/expiry

ROLES = {
    ACTIVE: "every resource of the app runs on this node",
    STANDBY: "the app does not run on this node",
    STARTING: "this node was elected; its resources are starting",
    STOPPING: "this node is stopping the app's resources",
    FAILED: "the app failed on this node; it stays stopped until cleanup or failure_timeout",
}

# A node that reports one of these roles runs (or is about to run) the whole app.
RUNNING = (ACTIVE, STARTING)
# A node that reports one of these roles holds (or may still hold) the app.
HOLDING = (ACTIVE, STARTING, STOPPING)

# The app role on this node: the edges a supervisor turn may take. One writer,
# AppSupervisor.transition(); any other edge is a bug and is refused loudly, naming the
# app and the edge. The rule they encode: a node is active only after it was starting
# (every resource started in this term), except when the start-up probe (or a reload's)
# adopts resources it finds running: PROBE_EDGES.
ROLE_EDGES = {
    STANDBY: {
        STARTING,   # elected: bring_up begins
        STOPPING,   # a resource maybe runs (its alive() failed) or a stray one: it must stop
        FAILED,     # a failure recorded while nothing ran (a failed start left nothing behind)
    },
    STARTING: {
        ACTIVE,     # every resource started (and promoted)
        STOPPING,   # no longer elected, or quorum lapsed, while starting
        STANDBY,    # no longer elected, and nothing had started yet
        FAILED,     # a start failed beyond on_fail: the app failed here
    },
    ACTIVE: {
        STARTING,   # a resource is being restarted (on_fail restart)
        STOPPING,   # no longer elected, lost quorum or health
        STANDBY,    # no longer elected when every resource had died already
        FAILED,     # died beyond on_fail, and nothing is left to stop
    },
    STOPPING: {
        STANDBY,    # every resource stopped
        FAILED,     # stopped, with the failure that made it stop recorded
        STARTING,   # elected again before the stop finished
    },
    FAILED: {
        STANDBY,    # cleanup or failure_timeout: eligible again
        STARTING,   # cleaned up and elected in the same turn
        STOPPING,   # something of it still runs and must stop
    },
}
# The probe (desired role not decided yet) reports what it finds, from any role.
PROBE_EDGES = {role: set(ROLES) - {role} for role in ROLES}


def reported_role(role, desired, quorum_lapsed):
    """The role a node tells its peers and shows, from the supervisor's ``role``.

    It never changes the stored role (only AppSupervisor.transition does): decided
    active but not begun yet reads ``starting`` already (peers must not elect another
    node meanwhile); active or starting once our quorum lapsed reads ``stopping`` at
    once, before the election loop has even run (docs/cluster.rst, "Up, down and quorum").
    """
    if desired == ACTIVE and role in (STANDBY, FAILED):
        role = STARTING
    if role in RUNNING and quorum_lapsed:
        return STOPPING
    return role


# Resource states (apps.<app>.resources.<res>.state).
STOPPED = "stopped"
STARTED = "started"
R_STARTING = "starting"
R_STOPPING = "stopping"
R_FAILED = "failed"
UNMANAGED = "unmanaged"

RESOURCE_STATES = {
    STOPPED: "not running (alive() says no)",
    R_STARTING: "start() is running",
    STARTED: "running (alive() says yes)",
    R_STOPPING: "stop() is running",
    R_FAILED: "died or failed to start/stop; see message and fail_count",
    UNMANAGED: "maintenance mode: hado observes but does not start or stop it",
}

# Allowed resource state transitions; anything else is a bug and is refused loudly.
RESOURCE_EDGES = {
    STOPPED: {R_STARTING, STARTED, R_STOPPING, R_FAILED, UNMANAGED},
    R_STARTING: {STARTED, R_FAILED, R_STOPPING, STOPPED, UNMANAGED},
    STARTED: {R_STOPPING, R_FAILED, STOPPED, UNMANAGED},
    R_STOPPING: {STOPPED, R_FAILED, UNMANAGED},
    R_FAILED: {R_STARTING, R_STOPPING, STOPPED, STARTED, UNMANAGED},
    UNMANAGED: {STOPPED, STARTED, R_FAILED},
}

# Resource kinds (apps.<app>.resources[i].kind).
ACTIVE_STANDBY = "active-standby"   # runs on the active node only
CLONE = "clone"                     # runs on every eligible node
PROMOTABLE = "promotable"           # runs on every eligible node, promoted on the active one
KINDS = (ACTIVE_STANDBY, CLONE, PROMOTABLE)

# What to do when a resource dies (apps.<app>.resources[i].on_fail).
RESTART = "restart"
FAILOVER = "failover"
IGNORE = "ignore"
ON_FAIL = (RESTART, FAILOVER, IGNORE)
