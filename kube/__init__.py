"""The Kubernetes API's own protocol, as the gateway and kubesim both speak it.

Request attributes (``requestinfo``), the protobuf envelope (``kubeproto``), SPDY/3.1
(``spdy``) and the channel.k8s.io framing (``channels``), ``Status`` answers (``status``),
headers, bodies and media types (``headers``, ``bodies``, ``media``), dry runs (``dryrun``) and
the verb and subresource sets (``vocabulary``).  No Django models, no policy, and no
other first-party package.
"""
