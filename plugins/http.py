"""An HTTP(S) URL that answers with the expected status (and body text): a monitor.

Arguments:
  url           the URL to GET, http:// or https://.
  expect_status the status code that counts as healthy (default 200).
  expect_body   optional text the body must contain (searched in the first 1 MB).
  timeout       seconds for connecting and for each read (default 5.0).

Notes: redirects are not followed (a 301 is compared as 301) and proxy variables in
the environment are ignored: the check talks to the service itself. HTTPS
certificates are verified against the system's CAs.
"""

import http.client
import urllib.error
import urllib.request

MAX_BODY = 1024 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def check(url, expect_status=200, expect_body=None, timeout=5.0):
    request = urllib.request.Request(url, headers={"User-Agent": "hado-http-check"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, body = response.status, response.read(MAX_BODY)
    except urllib.error.HTTPError as exc:  # 3xx, 4xx, 5xx: an answer, not an error here
        status, body = exc.code, exc.read(MAX_BODY) if exc.fp else b""
        exc.close()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return False, f"{url}: no answer within {timeout:g} s"
        return False, f"{url}: {getattr(exc.reason, 'strerror', None) or exc.reason}"
    except TimeoutError:  # while reading the body
        return False, f"{url}: no answer within {timeout:g} s"
    except OSError as exc:
        return False, f"{url}: {exc.strerror or exc}"
    except http.client.HTTPException as exc:  # a garbled or cut-off answer
        return False, f"{url}: bad answer: {type(exc).__name__}: {exc}"
    if status != expect_status:
        return False, f"{url}: status {status}, expected {expect_status}"
    if expect_body is not None and expect_body not in body.decode("utf-8", errors="replace"):
        return False, f"{url}: status {status} but the body lacks {expect_body!r}"
    return True, f"{url}: status {status}"


def validate(url, expect_status=200, expect_body=None, timeout=5.0):
    errors = []
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        errors.append(f"url must start with http:// or https://, not {url!r}")
    if isinstance(expect_status, bool) or not isinstance(expect_status, int) \
            or not 100 <= expect_status <= 599:
        errors.append(f"expect_status must be an HTTP status code (100-599), not {expect_status!r}")
    if expect_body is not None and not isinstance(expect_body, str):
        errors.append(f"expect_body must be a string, not {expect_body!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        errors.append(f"timeout must be a number of seconds > 0, not {timeout!r}")
    return errors
