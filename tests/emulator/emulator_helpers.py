"""Helpers shared by the emulator tests: parse answers, call the gateway, steer it.

Imported by name (`from emulator_helpers import ...`): pytest puts this folder on
sys.path, and the name is unique across the project's tests.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import attrs
from stack_support import hx

from aisix_async.emulator import EmulatorServer, ManualClock

__all__ = ["DATA_ACTIONS", "START", "Answer", "Gateway", "parse_answer"]

#: 2023-11-14 22:13:20 UTC: a fixed "now" for every test's gateway clock.
START = 1_700_000_000.0
DATA_ACTIONS = frozenset({"getSendState", "getReply"})


@attrs.define
class Answer:
    """A parsed gateway answer."""

    status: int
    name: str
    result: int
    items: list[dict[str, str]]
    response: hx.Response


def parse_answer(response: hx.Response) -> Answer:
    """Parse the XML of a protocol answer (and check the envelope every answer shares)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(response.content)
    assert root.tag == "xml"
    assert all(child.tag == "Item" for child in root)
    return Answer(
        status=response.status_code,
        name=root.attrib["name"],
        result=int(root.attrib["result"]),
        items=[dict(child.attrib) for child in root],
        response=response,
    )


class Gateway:
    """A test's view of the session server: URLs, credentials, state and a client."""

    def __init__(self, server: EmulatorServer, client: hx.Client, clock: ManualClock):
        self.server = server
        self.client = client
        self.clock = clock
        self.state = server.state
        self.open_url = server.open_url
        self.data_url = server.data_url
        self.control_url = server.control_url
        self.account = server.account

    @property
    def authkey(self) -> str:
        return self.state.authkey()

    def form(self, action: str, **params: Any) -> dict[str, str]:
        data = {"action": action, "ac": self.account, "authkey": self.authkey}
        data.update({k: str(v) for k, v in params.items() if v is not None})
        return data

    def post(self, action: str, *, url: str | None = None, **params: Any) -> hx.Response:
        target = url or (self.data_url if action in DATA_ACTIONS else self.open_url)
        return self.client.post(target, data=self.form(action, **params))

    def call(self, action: str, *, url: str | None = None, **params: Any) -> Answer:
        return parse_answer(self.post(action, url=url, **params))

    def get(self, action: str, *, url: str | None = None, **params: Any) -> Answer:
        target = url or (self.data_url if action in DATA_ACTIONS else self.open_url)
        return parse_answer(self.client.get(target, params=self.form(action, **params)))

    def send_once(self, m: str, c: str, **params: Any) -> Answer:
        return self.call("sendOnce", m=m, c=c, **params)

    def control(self, method: str, path: str, json: Any = None) -> hx.Response:
        return self.client.request(method, self.control_url + path, json=json)
