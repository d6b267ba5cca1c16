"""Whether a namespace's NetworkPolicies let one pod reach another, read as
the Kubernetes documentation states them, for .ci/check-kubernetes.py: no
offline tool answers it (kubectl needs a cluster and a CNI to enforce them).
Enough of the API for what kubernetes/ writes: pod and namespace selectors
(matchLabels, matchExpressions), ports by number or by name, protocols; not
ipBlock or endPort, which the check refuses.
"""
from dataclasses import dataclass, field


@dataclass
class Pod:
    """One end of a connection: a pod (its namespace, labels, named ports), or
    an address outside the cluster when namespace is None."""
    namespace: str | None
    labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)


def selects(selector, labels):
    if selector is None:
        return False
    matched = all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())
    for expression in selector.get("matchExpressions") or []:
        key, values = expression["key"], expression.get("values", [])
        matched &= {"In": key in labels and labels[key] in values,
                    "NotIn": labels.get(key) not in values,
                    "Exists": key in labels,
                    "DoesNotExist": key not in labels}[expression["operator"]]
    return matched


def _peer_admits(peers, other, namespace):
    if not peers:
        return True
    for peer in peers:
        if other.namespace is None:
            continue
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": other.namespace})
        else:
            in_namespace = other.namespace == namespace
        if in_namespace and selects(peer.get("podSelector", {}), other.labels):
            return True
    return False


def _port_admits(ports, destination, port, protocol):
    if not ports:
        return True
    for entry in ports:
        # No port: every port; a name: the destination's port of that name.
        number = destination.ports.get(entry["port"], entry["port"]) if "port" in entry else port
        if entry.get("protocol", "TCP") == protocol and number == port:
            return True
    return False


def _policy_types(spec):
    # Without policyTypes: Ingress, and Egress where it has egress rules.
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _side_admits(policies, direction, subject, other, destination, port, protocol):
    """Whether the policies selecting `subject` let the connection through on
    its side; a pod no policy of that direction selects is open."""
    peers_key, rules_key = ("to", "egress") if direction == "Egress" else ("from", "ingress")
    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == subject.namespace
                 and direction in _policy_types(p["spec"])
                 and selects(p["spec"]["podSelector"], subject.labels)]
    if subject.namespace is None or not selecting:
        return True
    return any(_peer_admits(rule.get(peers_key), other, subject.namespace)
               and _port_admits(rule.get("ports"), destination, port, protocol)
               for policy in selecting for rule in policy["spec"].get(rules_key) or [])


def admits(policies, source, destination, port, protocol="TCP"):
    """Whether `source` may open a connection to `destination` on `port`: its
    egress and the destination's ingress both allow it."""
    return (_side_admits(policies, "Egress", source, destination, destination, port, protocol)
            and _side_admits(policies, "Ingress", destination, source, destination, port, protocol))
