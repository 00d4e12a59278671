"""Serving on Ray Serve: routing tables, the application (gateway + model server) and its control.

The Serve deployments themselves are in ``serve_apps/`` (gateway, model server); this package holds what the
CLI, the rollout controller and tests use to run and steer them.
"""

from qmlops.serving._requests import parse_date, parse_timestamp
from qmlops.serving._routing import BUCKETS, ROLES, RouteEntry, RoutingTable
from qmlops.serving._service import APP_NAME, ServeOptions, ServeService, build_app

__all__ = [
    "APP_NAME",
    "BUCKETS",
    "ROLES",
    "RouteEntry",
    "RoutingTable",
    "ServeOptions",
    "ServeService",
    "build_app",
    "parse_date",
    "parse_timestamp",
]
