"""A map's waypoints for the CARLA doubles (`tests.carla_double`), in CARLA's frame: the
default stadium loop (road 1) and a spur (road 2) leaving it 45° to the right at arc-length
``BRANCH`` and ending ``SPUR`` m later."""

import math

from envs.racing import task as rt
from envs.racing.carla_sim import from_plane
from envs.racing.track import TrackParams
from tests.carla_double import _Loc, _Rot, _Tf


class FakeWaypoint:
    TRACK = rt.Track.stadium(TrackParams())
    BRANCH, SPUR = 40.0, 40.0

    def __init__(self, road, s):
        self.road_id, self.lane_id, self.s = road, -1, s
        self.lane_width, self.is_junction = 3.5, False
        if road == 1:
            (x, y), psi = self.TRACK.centre(s), float(self.TRACK.frame(s)[2])
        else:
            x0, y0 = self.TRACK.centre(self.BRANCH)
            psi = -math.pi / 4
            x, y = x0 + s * math.cos(psi), y0 + s * math.sin(psi)
        cx, cy, yaw = from_plane(float(x), float(y), psi)
        self.transform = _Tf(_Loc(cx, cy, 0.5), _Rot(yaw=yaw))

    def next(self, d):
        if self.road_id == 2:
            return [FakeWaypoint(2, self.s + d)] if self.s + d <= self.SPUR else []
        s = (self.s + d) % self.TRACK.length
        if self.s < self.BRANCH <= self.s + d:
            return [FakeWaypoint(2, self.s + d - self.BRANCH), FakeWaypoint(1, s)]
        return [FakeWaypoint(1, s)]
