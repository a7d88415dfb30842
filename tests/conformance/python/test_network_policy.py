"""Network policy through the Python SDK: create with network_policy, then the egress API as the SDK
reaches it (the endpoint of port 18080 and the OPENSANDBOX-EGRESS-AUTH header it hands out, directly or
through the server proxy): get_egress_policy, patch_egress_rules (upstream's merge), delete_egress_rules,
a malformed rule refused, and a malformed policy refused on create with nothing left behind. On the
Kubernetes runtime a create with network_policy is refused (400)."""

import pytest
from conftest import RUNTIME, run_id
from opensandbox.exceptions import SandboxApiException, SandboxException
from opensandbox.models.sandboxes import NetworkPolicy, NetworkRule, SandboxFilter

POLICY = NetworkPolicy(
    default_action="deny",
    egress=[NetworkRule(action="allow", target="PyPI.org."), NetworkRule(action="allow", target="10.1.2.3/16")],
)


def rules(policy):
    return [f"{r.action} {r.target}" for r in policy.egress or []]


def test_egress_policy_get_patch_delete(make_sandbox, manager):
    if RUNTIME == "kubernetes":  # it cannot enforce a policy: refused before anything is made
        rid = run_id()
        with pytest.raises(SandboxApiException) as err:
            make_sandbox(metadata={"run": rid}, network_policy=POLICY, skip_health_check=True)
        assert err.value.status_code == 400
        assert "not supported on the kubernetes runtime" in str(err.value)
        assert manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid})).sandbox_infos == []
        return
    sbx = make_sandbox(metadata={"run": run_id()}, network_policy=POLICY, skip_health_check=True)
    policy = sbx.get_egress_policy()
    assert policy.default_action == "deny"
    assert rules(policy) == ["allow pypi.org", "allow 10.1.0.0/16"]

    sbx.patch_egress_rules([NetworkRule(action="deny", target="pypi.org"),
                            NetworkRule(action="allow", target="*.example.com"),
                            NetworkRule(action="allow", target="pypi.org")])
    assert rules(sbx.get_egress_policy()) == ["deny pypi.org", "allow *.example.com", "allow 10.1.0.0/16"]

    sbx.delete_egress_rules(["pypi.org", "not-there.org"])
    assert rules(sbx.get_egress_policy()) == ["allow *.example.com", "allow 10.1.0.0/16"]

    with pytest.raises(SandboxException) as err:
        sbx.patch_egress_rules([NetworkRule(action="allow", target="bad..name")])
    assert "400" in str(err.value) or getattr(err.value, "status_code", None) == 400
    assert rules(sbx.get_egress_policy()) == ["allow *.example.com", "allow 10.1.0.0/16"]


def test_malformed_policy_is_refused_and_nothing_created(make_sandbox, manager):
    rid = run_id()
    bad = NetworkPolicy(default_action="deny", egress=[NetworkRule(action="allow", target="300.1.1.1")])
    with pytest.raises(SandboxApiException) as err:
        make_sandbox(metadata={"run": rid}, network_policy=bad, skip_health_check=True)
    assert err.value.status_code == 400
    assert "networkPolicy.egress[0].target" in str(err.value)
    assert manager.list_sandbox_infos(SandboxFilter(metadata={"run": rid})).sandbox_infos == []

