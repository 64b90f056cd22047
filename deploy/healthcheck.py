"""The container image's HEALTHCHECK: is the gateway in this container serving?

``python deploy/healthcheck.py [URL]`` exits 0 when ``GET URL`` (default the gateway's own
``https://127.0.0.1:8443/livez``) answers 200 within three seconds, 1 otherwise.  Standard library
only, so the image needs no curl.  The request goes to the local listener over loopback, never
through a proxy from the environment; the certificate is not checked because it names the
gateway's public host, not 127.0.0.1, and nothing is sent that needs protecting.
"""

import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "https://127.0.0.1:8443/livez"
TIMEOUT_SECONDS = 3.0


def healthy(url: str = DEFAULT_URL, timeout: float = TIMEOUT_SECONDS) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError, urllib.error.URLError):
        return False


def main(argv: list[str]) -> int:
    return 0 if healthy(argv[0] if argv else DEFAULT_URL) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
