"""The REST API of an `updraft standalone` started by a benchmark: a free loopback port for it,
and a client that signs in as the admin whose password standalone wrote on first start."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, port: int, home: str):
        self.base = f"http://127.0.0.1:{port}"
        self.home = home
        self.token = None

    def login(self) -> bool:
        """False until standalone has written the admin's password and answers."""
        pw_file = os.path.join(self.home, "standalone_admin_password.txt")
        if not os.path.exists(pw_file):
            return False
        with open(pw_file) as f:
            pw = f.read().strip()
        body = json.dumps({"username": "admin", "password": pw}).encode()
        req = urllib.request.Request(self.base + "/auth/token", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                self.token = json.load(r)["access_token"]
            return True
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return False

    def get(self, path: str):
        """The JSON answer, or None for a 404."""
        req = urllib.request.Request(self.base + path,
                                     headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
