"""GkeCluster: a GKE cluster with a separate node pool and a Kubernetes provider for it."""

from __future__ import annotations

import datetime as dt
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
KMS_API = "cloudkms.googleapis.com"
"""Enabled too when Secrets are encrypted with a KMS key."""
KEY_ROTATION = "7776000s"
"""90 days: a new key version encrypts new writes; old versions still decrypt, nothing is re-encrypted."""
ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


@dataclass(frozen=True)
class GkeClusterArgs:
    project: str
    """GCP project id."""
    location: str
    """A zone (zonal cluster: one control plane) or a region (regional: replicated control plane)."""
    region: str
    """The location's region: where the Secrets' KMS key lives (GKE wants it in the cluster's region)."""
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
    private_nodes: bool = False
    """Nodes with internal addresses only; the control plane keeps its public endpoint. No Cloud NAT is
    made: images must come from Artifact Registry (Private Google Access, which GKE turns on)."""
    master_authorized_networks: tuple[str, ...] = ()
    """IPv4 CIDRs that may reach the control plane; empty: any address."""
    secrets_encryption: bool = False
    """Encrypt Secrets in etcd with a KMS key of this cluster (application-layer encryption)."""
    maintenance_window: str = ""
    """Daily start (HH:MM, UTC) of GKE's 4-hour maintenance window; empty: GKE's choice."""
    maintenance_exclusions: tuple[tuple[str, str], ...] = ()
    """(first, last) ISO days, UTC, without upgrades; GKE takes them only with a window."""
    managed_prometheus: bool = False
    """Google Cloud Managed Service for Prometheus managed collection: GKE runs the collectors that
    read PodMonitoring objects and the evaluator of Rules objects. Off: explicitly off (GKE turns it
    on by default for new clusters), for clusters scraped by their own Prometheus or not at all."""
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

        apis = (*args.apis, KMS_API) if args.secrets_encryption else args.apis
        self.apis = _apis(name, args.project, apis, pulumi.ResourceOptions(parent=self))
        # Every GCP call of this component needs one of the APIs enabled first.
        child = pulumi.ResourceOptions(parent=self, depends_on=self.apis)
        node_sa, grants = _node_identity(name, args, child)
        secrets_key = _secrets_key(name, args, self, child) if args.secrets_encryption else None
        self.cluster = _cluster(name, args, self, node_sa=node_sa, grants=grants, secrets_key=secrets_key)
        self.node_pool = _node_pool(name, args, self, cluster=self.cluster, node_sa=node_sa, grants=grants)

        self.name = self.cluster.name
        self.kubeconfig = _kubeconfig(args, self.cluster)
        self.provider = _provider(name, self.kubeconfig, self.cluster, self.node_pool, self)
        self.register_outputs({"name": self.name, "kubeconfig": self.kubeconfig, "endpoint": self.cluster.endpoint})


def _apis(name: str, project: str, apis: tuple[str, ...], child: pulumi.ResourceOptions) -> list[gcp.projects.Service]:
    return [
        gcp.projects.Service(
            f"{name}-api-{api.split('.')[0]}",
            project=project,
            service=api,
            # A destroyed stack must not switch an API off under everything else in the project.
            disable_on_destroy=False,
            opts=child,
        )
        for api in apis
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
    if args.managed_prometheus:
        # GKE's managed rule evaluator queries Cloud Monitoring as the node service account.
        roles.append("roles/monitoring.viewer")
    grants = [
        gcp.projects.IAMMember(
            f"{name}-nodes-{role.split('/')[1]}", project=args.project, role=role, member=member, opts=child
        )
        for role in roles
    ]
    return node_sa, grants


def _secrets_key(
    name: str, args: GkeClusterArgs, parent: GkeCluster, child: pulumi.ResourceOptions
) -> tuple[gcp.kms.CryptoKey, gcp.kms.CryptoKeyIAMMember]:
    """A KMS key for the Secrets in etcd, usable by GKE's service agent (the cluster waits for the grant).

    Key ring and key are auto-named: GCP never deletes a key ring (and keeps a destroyed key's name),
    so a stack created again must not reuse the old names.
    """
    ring = gcp.kms.KeyRing(f"{name}-secrets", project=args.project, location=args.region, opts=child)
    key = gcp.kms.CryptoKey(
        f"{name}-secrets",
        key_ring=ring.id,
        purpose="ENCRYPT_DECRYPT",
        rotation_period=KEY_ROTATION,
        labels=args.labels,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    number = gcp.organizations.get_project_output(
        project_id=args.project, opts=pulumi.InvokeOutputOptions(parent=parent, depends_on=parent.apis)
    ).number
    grant = gcp.kms.CryptoKeyIAMMember(
        f"{name}-secrets-gke",
        crypto_key_id=key.id,
        role=ENCRYPTER_DECRYPTER,
        # GKE's service agent, made when the container API is enabled: it encrypts and decrypts.
        member=number.apply(lambda n: f"serviceAccount:service-{n}@container-engine-robot.iam.gserviceaccount.com"),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return key, grant


def _maintenance_policy(args: GkeClusterArgs) -> gcp.container.ClusterMaintenancePolicyArgs | None:
    if not args.maintenance_window:
        return None
    return gcp.container.ClusterMaintenancePolicyArgs(
        daily_maintenance_window=gcp.container.ClusterMaintenancePolicyDailyMaintenanceWindowArgs(
            start_time=args.maintenance_window
        ),
        maintenance_exclusions=[
            gcp.container.ClusterMaintenancePolicyMaintenanceExclusionArgs(
                exclusion_name=f"no-upgrades-{first}",
                start_time=f"{first}T00:00:00Z",
                # The last day is included: the exclusion ends as the next day starts.
                end_time=f"{dt.date.fromisoformat(last) + dt.timedelta(days=1)}T00:00:00Z",
                exclusion_options=gcp.container.ClusterMaintenancePolicyMaintenanceExclusionExclusionOptionsArgs(
                    scope="NO_UPGRADES"
                ),
            )
            for first, last in args.maintenance_exclusions
        ]
        or None,
    )


def _cluster(
    name: str,
    args: GkeClusterArgs,
    parent: GkeCluster,
    *,
    node_sa: gcp.serviceaccount.Account,
    grants: list[gcp.projects.IAMMember],
    secrets_key: tuple[gcp.kms.CryptoKey, gcp.kms.CryptoKeyIAMMember] | None,
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
        # Private nodes, public control plane (restricted by the authorized networks, if any):
        # `pulumi up` from outside the VPC still reaches the API server.
        private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
            enable_private_nodes=True, enable_private_endpoint=False
        )
        if args.private_nodes
        else None,
        master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
            cidr_blocks=[
                gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(cidr_block=cidr, display_name=cidr)
                for cidr in args.master_authorized_networks
            ],
            # Only the listed networks: not every Compute Engine address of every GCP customer too.
            gcp_public_cidrs_access_enabled=False,
        )
        if args.master_authorized_networks
        else None,
        database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(state="ENCRYPTED", key_name=secrets_key[0].id)
        if secrets_key
        else None,
        maintenance_policy=_maintenance_policy(args),
        monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
            managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(
                enabled=args.managed_prometheus
            )
        ),
        resource_labels=args.labels,
        opts=pulumi.ResourceOptions(
            parent=parent,
            # The key's grant first: GKE checks it can use the key when it creates the cluster.
            depends_on=[*parent.apis, *grants, *([secrets_key[1]] if secrets_key else [])],
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
        # ConfigMap and Secret data update in place. Without these the provider replaces them on
        # any data change (diff.go), delete-before-replace since their names are fixed, and the
        # engine then replaces every dependent first: the whole broker StatefulSet at once.
        # Chosen over generated names with create-before-delete: the pod runner, the harness's
        # Secret rules, KEDA's TriggerAuthentication, the drills and the runbooks all find these
        # objects by their fixed names (contract.wire.child_name); what a pod read at start is
        # rolled by its template's checksum annotations instead. Adding the options to a running
        # stack is a provider update, not a replacement (DiffConfig replaces only when the
        # kubeconfig's active cluster changes).
        enable_config_map_mutable=True,
        enable_secret_mutable=True,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[node_pool]),
    )
