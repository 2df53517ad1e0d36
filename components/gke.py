"""GkeCluster: a GKE cluster with a separate node pool and a Kubernetes provider for it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import yaml

# The plugin replaced the in-tree gcp auth provider (removed in kubectl 1.26): the
# kubeconfig holds no token, so nothing in it expires or leaks into state.
AUTH_PLUGIN = "gke-gcloud-auth-plugin"
# Without it the plugin runs `gcloud config config-helper`, i.e. gcloud's *active account*, not
# the application-default credentials the GCP provider uses: a CI runner with only
# GOOGLE_APPLICATION_CREDENTIALS would create the cluster and then fail on every Kubernetes
# object, and a desktop with two identities would be checked by GKE RBAC as the wrong one.
# The same argument `gcloud container clusters get-credentials` writes when
# container/use_application_default_credentials is set.
AUTH_PLUGIN_ARGS = ("--use_application_default_credentials",)

CLUSTER_APIS = ("container.googleapis.com", "iam.googleapis.com", "cloudresourcemanager.googleapis.com")
"""APIs this component calls: the cluster (container), its node service account (iam) and the
account's project role grants (cloudresourcemanager); the latter two are off in many new projects."""


@dataclass(frozen=True)
class GkeClusterArgs:
    project: str
    """GCP project id."""
    location: str
    """A zone (zonal cluster: one control plane) or a region (regional: replicated control plane)."""
    regional: bool
    """True when location is a region: node_zones then spread the nodes."""
    node_zones: tuple[str, ...]
    """Zones carrying nodes. For a regional cluster GKE counts node_count per zone."""
    nodes_per_zone: int
    """Nodes in each zone (total nodes / zones), so 3 zones x 1 = the 3 nodes the broker needs."""
    machine_type: str
    """Node machine type; its family decides which disk types attach."""
    spot: bool
    """Spot VMs: cheap but reclaimable together, so dev only."""
    disk_type: str
    """Node boot disk type (pd-standard, pd-balanced, pd-ssd, hyperdisk-balanced)."""
    disk_size_gb: int
    """Node boot disk size, GB."""
    release_channel: str
    """RAPID, REGULAR or STABLE: GKE upgrades control plane and nodes within it."""
    min_master_version: str
    """major.minor floor for the control plane."""
    deletion_protection: bool
    """When true, `pulumi destroy` (and a replacement) of the cluster fails until it is turned off."""
    labels: dict[str, str]
    """GCP labels on the cluster and the nodes, for cost reports."""
    apis: tuple[str, ...] = CLUSTER_APIS
    """Project APIs to enable before anything else (CLUSTER_APIS plus what the caller's other
    components need), so `pulumi up` works on a fresh project."""


def render_kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig for one cluster that authenticates through gke-gcloud-auth-plugin."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca_certificate}}
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": AUTH_PLUGIN,
                        "args": list(AUTH_PLUGIN_ARGS),
                        "installHint": "gcloud components install gke-gcloud-auth-plugin",
                        "provideClusterInfo": True,
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


class GkeCluster(pulumi.ComponentResource):
    """A VPC-native, shielded, workload-identity GKE cluster with its own node pool.

    The default node pool is removed; the cluster's node_config names only the bootstrap
    pool's identity and is ignored after the create: a node config on the cluster resource
    itself would make every change to it a cluster replacement. The nodes are the NodePool's.
    """

    apis: list[gcp.projects.Service]
    cluster: gcp.container.Cluster
    node_pool: gcp.container.NodePool
    name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:GkeCluster", name, None, opts)

        self.apis = _apis(name, args, pulumi.ResourceOptions(parent=self))
        # Every GCP call of this component needs one of the APIs enabled first.
        child = pulumi.ResourceOptions(parent=self, depends_on=self.apis)
        node_sa, grants = _node_identity(name, args, child)
        self.cluster = _cluster(name, args, self, node_sa=node_sa, grants=grants)
        self.node_pool = _node_pool(name, args, self, cluster=self.cluster, node_sa=node_sa, grants=grants)

        self.name = self.cluster.name
        self.kubeconfig = _kubeconfig(args, self.cluster)
        self.provider = _provider(name, self.kubeconfig, self.cluster, self.node_pool, self)
        self.register_outputs({"name": self.name, "kubeconfig": self.kubeconfig, "endpoint": self.cluster.endpoint})


def _apis(name: str, args: GkeClusterArgs, child: pulumi.ResourceOptions) -> list[gcp.projects.Service]:
    return [
        gcp.projects.Service(
            f"{name}-api-{api.split('.')[0]}",
            project=args.project,
            service=api,
            # A destroyed stack must not switch an API off under everything else in the project.
            disable_on_destroy=False,
            opts=child,
        )
        for api in args.apis
    ]


def _node_identity(
    name: str, args: GkeClusterArgs, child: pulumi.ResourceOptions
) -> tuple[gcp.serviceaccount.Account, list[gcp.projects.IAMMember]]:
    # A dedicated node identity: the Compute Engine default account has project Editor.
    node_sa = gcp.serviceaccount.Account(
        f"{name}-nodes",
        account_id=f"{name}-nodes"[:30],
        display_name=f"GKE nodes of {name}",
        project=args.project,
        opts=child,
    )
    member = node_sa.email.apply(lambda email: f"serviceAccount:{email}")
    # The minimum roles GKE documents for a node service account, plus image pulls.
    roles = ["roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader"]
    grants = [
        gcp.projects.IAMMember(
            f"{name}-nodes-{role.split('/')[1]}", project=args.project, role=role, member=member, opts=child
        )
        for role in roles
    ]
    return node_sa, grants


def _cluster(
    name: str,
    args: GkeClusterArgs,
    parent: GkeCluster,
    *,
    node_sa: gcp.serviceaccount.Account,
    grants: list[gcp.projects.IAMMember],
) -> gcp.container.Cluster:
    return gcp.container.Cluster(
        name,
        project=args.project,
        location=args.location,
        node_locations=list(args.node_zones) if args.regional else None,
        remove_default_node_pool=True,
        initial_node_count=1,
        # GKE boots the default pool (then removed) before our pool exists, by default as the
        # Compute Engine default account: gone or disabled in many orgs, which fails the create.
        # Only the identity is set; ignore_changes below keeps this from replacing the cluster.
        node_config=gcp.container.ClusterNodeConfigArgs(
            service_account=node_sa.email, oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"]
        ),
        deletion_protection=args.deletion_protection,
        release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.release_channel),
        min_master_version=args.min_master_version,
        networking_mode="VPC_NATIVE",
        # Empty policy = GKE allocates the pod and service secondary ranges itself.
        ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(),
        # Dataplane V2 enforces the NetworkPolicies the broker component creates.
        datapath_provider="ADVANCED_DATAPATH",
        workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
            workload_pool=f"{args.project}.svc.id.goog"
        ),
        enable_shielded_nodes=True,
        resource_labels=args.labels,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=[*parent.apis, *grants],
            # The cluster's nodeConfig is the bootstrap pool's, read back as the first live pool's
            # afterwards (terraform-provider-google#12070, #17511): without this, every up would
            # see a diff in a force-new field and replace the cluster.
            ignore_changes=["nodeConfig"],
        ),
    )


def _node_pool(
    name: str,
    args: GkeClusterArgs,
    parent: pulumi.Resource,
    *,
    cluster: gcp.container.Cluster,
    node_sa: gcp.serviceaccount.Account,
    grants: list[gcp.projects.IAMMember],
) -> gcp.container.NodePool:
    return gcp.container.NodePool(
        f"{name}-pool",
        project=args.project,
        cluster=cluster.name,
        location=args.location,
        node_locations=list(args.node_zones),
        node_count=args.nodes_per_zone,
        management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
        # One extra node during upgrades and none taken away first: the broker's PDB
        # (maxUnavailable 1) then always has somewhere to reschedule.
        upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(strategy="SURGE", max_surge=1, max_unavailable=0),
        node_config=gcp.container.NodePoolNodeConfigArgs(
            machine_type=args.machine_type,
            spot=args.spot,
            disk_type=args.disk_type,
            disk_size_gb=args.disk_size_gb,
            service_account=node_sa.email,
            # Access is governed by IAM roles, not legacy scopes (Google's recommendation).
            oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
            workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
            shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_integrity_monitoring=True
            ),
            labels={"ha-celery/pool": "main"},
            resource_labels=args.labels,
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=grants),
    )


def _kubeconfig(args: GkeClusterArgs, cluster: gcp.container.Cluster) -> pulumi.Output[str]:
    return pulumi.Output.secret(
        pulumi.Output.all(cluster.name, cluster.endpoint, cluster.master_auth).apply(
            lambda a: render_kubeconfig(
                f"gke_{args.project}_{args.location}_{a[0]}", a[1], a[2]["cluster_ca_certificate"]
            )
        )
    )


def _provider(
    name: str,
    kubeconfig: pulumi.Output[str],
    cluster: gcp.container.Cluster,
    node_pool: gcp.container.NodePool,
    parent: pulumi.Resource,
) -> k8s.Provider:
    return k8s.Provider(
        f"{name}-k8s",
        kubeconfig=kubeconfig,
        # The cluster's id is stable; without it a rotated CA or endpoint in the
        # kubeconfig would replace every Kubernetes object in the stack.
        cluster_identifier=cluster.id,
        delete_unreachable=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[node_pool]),
    )
