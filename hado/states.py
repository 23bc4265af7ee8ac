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

# A node that reports one of these roles holds (or may still hold) the app.
HOLDING = (ACTIVE, STARTING, STOPPING)

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
