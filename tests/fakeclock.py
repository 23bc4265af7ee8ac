"""A fake monotonic clock for in-process tests: time moves only when the test moves it.

In the manner of CPython's ``sched`` (``scheduler(timefunc, delayfunc)``): ``time`` is
the time function, ``sleep`` the delay function that moves it; ``scheduler()`` builds a
``sched.scheduler`` on the two, so a test can script "node-b answers every heartbeat,
the node turns when its next_wait() says" and run it in no wall time at all.

The engine takes ``clock=`` (Node, State, AppSupervisor, Monitor, Leases): pass the
clock itself, it is callable. Code that waits on a ``threading.Event`` with a timeout
(Monitor.run, AppSupervisor.run) can be given a :class:`FakeEvent` instead: its
``wait(timeout)`` moves this clock by ``timeout`` rather than blocking, and then runs
the test's hooks (change the world, or set the event to end the loop).
"""

import sched
import threading


class FakeClock:
    """Monotonic seconds that move only by :meth:`sleep`, :meth:`advance` or :meth:`advance_to`.

    Thread-safe (plugin calls run on helper threads and may read it), never goes back.
    """

    def __init__(self, start=1000.0):
        self._now = float(start)
        self._lock = threading.Lock()

    def time(self):
        with self._lock:
            return self._now

    __call__ = time   # Node(config, clock=FakeClock()) reads it as clock()

    def sleep(self, seconds):
        """The delay function: move the clock ``seconds`` ahead (0 or less: no change)."""
        if seconds is None:
            raise ValueError("a fake clock cannot sleep forever: give a timeout")
        with self._lock:
            if seconds > 0:
                self._now += seconds
            return self._now

    advance = sleep

    def advance_to(self, when):
        """Move the clock to ``when``; never backwards."""
        with self._lock:
            if when < self._now:
                raise ValueError(f"the clock never goes back: {when} < {self._now}")
            self._now = float(when)
            return self._now

    def scheduler(self):
        """A ``sched.scheduler`` whose time is this clock and whose delay moves it."""
        return sched.scheduler(self.time, self.sleep)

    def event(self, on_wait=None):
        """A :class:`FakeEvent` on this clock."""
        return FakeEvent(self, on_wait)


class FakeEvent:
    """A ``threading.Event`` stand-in whose ``wait(timeout)`` advances the fake clock.

    ``wait`` returns at once when the event is set; else it moves the clock by
    ``timeout``, calls every hook in ``on_wait`` with ``(event, timeout)`` (a hook may
    change the world, or ``set()`` the event to end the caller's loop) and returns
    whether the event is set. ``waits`` lists every timeout it was asked to wait.
    """

    def __init__(self, clock, on_wait=None):
        self.clock = clock
        self.hooks = [on_wait] if on_wait else []
        self.waits = []
        self._set = False

    def set(self):
        self._set = True

    def clear(self):
        self._set = False

    def is_set(self):
        return self._set

    def wait(self, timeout=None):
        if self._set:
            return True
        if timeout is None:
            raise ValueError("a FakeEvent that is not set cannot wait forever: give a timeout")
        self.waits.append(timeout)
        self.clock.sleep(timeout)
        for hook in list(self.hooks):
            hook(self, timeout)
        return self._set
