"""The gateway's admin token, for the tests that call its admin API (/api/status, /api/mode, …)
or open its dashboard. Each gateway a test starts is given a token file of its own in the
test's temporary directory (UNDERSTUDY_ADMIN_TOKEN_FILE), which the gateway makes at start;
admin calls send the token as `x-understudy-token`, and a browser signs in through a one-time
link (POST /api/session), as `understudy dashboard` does."""

import json
import os
import time
import urllib.request

HEADER = "x-understudy-token"


def token_file(directory):
    """The token file given to a gateway started for a test (its UNDERSTUDY_ADMIN_TOKEN_FILE), in
    `directory`."""
    return os.path.join(str(directory), "admin-token")


def default_token_file(home):
    """Where a gateway keeps its token when its environment has HOME=`home` and neither
    UNDERSTUDY_ADMIN_TOKEN_FILE nor XDG_CONFIG_HOME: the platform config dir's `admin-token`."""
    return os.path.join(str(home), ".config", "understudy", "admin-token")


def admin_token(token_path, timeout=10.0):
    """The token in `token_path`, waiting up to `timeout` s for the gateway to write it."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open(token_path) as f:
                token = f.read().strip()
            if token:
                return token
        except FileNotFoundError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"the gateway wrote no admin token to {token_path}")
        time.sleep(0.1)


def admin_headers(token_path, headers=None):
    """`headers` (a dict) with the token from `token_path` added."""
    return {**(headers or {}), HEADER: admin_token(token_path)}


def admin_request(url, token_path, method="GET", body=None):
    """A urllib request for the admin endpoint at `url` (the whole URL), carrying the token
    from `token_path` (and `body` as JSON)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"content-type": "application/json"}
    return urllib.request.Request(url, data=data, method=method, headers=admin_headers(token_path, headers))


def sign_in_url(url, token_path):
    """A one-time link (the whole URL) that signs a browser in to the dashboard of the gateway
    at `url`, and lands it on /ui/: good once, within a minute."""
    with urllib.request.urlopen(admin_request(url + "/api/session", token_path, "POST")) as r:
        return url + json.loads(r.read())["url"]


def sign_in(page, url, token_path):
    """Opens the dashboard in a Playwright `page`, signed in (for the life of its context)."""
    page.goto(sign_in_url(url, token_path))
