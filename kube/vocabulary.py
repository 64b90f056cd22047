"""The verb and subresource sets of the Kubernetes API, each defined once.

Verbs are kube-apiserver's RequestInfo verbs (``get``, ``list``, ``create`` ...), subresources
the path segment after an object's name (``pods/exec`` -> ``exec``).
"""

# Verbs that change what the cluster stores: what a dry run applies to, what kube-apiserver
# decodes a body for (an object, a patch or DeleteOptions), and what the audit trail commits
# before it is forwarded.
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Mutating verbs whose body is an object or a patch of one (a delete's body is DeleteOptions).
OBJECT_BODY_VERBS = frozenset({"create", "update", "patch"})
DELETE_VERBS = frozenset({"delete", "deletecollection"})
# Verbs that act on a collection: label and field selectors apply to them.
COLLECTION_VERBS = frozenset({"list", "watch", "deletecollection"})

# Pod subresources that open a bidirectional stream (remotecommand, port-forward).
STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
# Subresources kube-apiserver serves as a connection (its "connect" REST verbs): the streams and
# the proxy.  Their body is passed on, never decoded, and they cannot be dry runs.
CONNECT_SUBRESOURCES = STREAM_SUBRESOURCES | {"proxy"}
# The verbs a connect subresource is reached by: GET (WebSocket upgrade) and POST (SPDY, create).
CONNECT_VERBS = frozenset({"get", "create"})

# Requests kube-apiserver does not time out (its --request-timeout): watches, proxies and the
# connect subresources and logs.
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
LONG_RUNNING_SUBRESOURCES = CONNECT_SUBRESOURCES | {"log"}
