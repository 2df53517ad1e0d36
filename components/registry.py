"""Registry: an Artifact Registry Docker repository with the worker image pushed into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from contract.image import (
    MIRROR_CONTEXT,
    MIRROR_IMAGE_ARG,
    WORKER_DOCKERFILE,
    ImagePlatforms,
    mirror_tag,
    worker_tag,
)

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RegistryArgs:
    project: str
    """GCP project id."""
    location: str
    """Location of the repository: the cluster's region (pulls stay in-region), or for a gcr.io
    domain that domain's multi-region (us, europe, asia)."""
    repository_id: str | None
    """A gcr.io domain (gcr.io, us.gcr.io, eu.gcr.io, asia.gcr.io): the project's repository of that
    id, images named ``<domain>/<project>/ha-celery-<image>``; None: a repository of this stack,
    named after the component, at ``<location>-docker.pkg.dev/<project>/<name>/<image>``."""
    platforms: ImagePlatforms
    """What the worker and mirror images are built for (one platform, or a multi-arch index)."""
    context_dir: str
    """Build context of the worker image: the project root, relative (so state does not depend on
    where the project is checked out); app/Dockerfile.dockerignore admits only WORKER_SOURCES."""
    mirror_image: str | None
    """A public image (the broker's) to copy into the repository for clusters without internet
    egress, or None. Built from its own context (contract.image.MIRROR_CONTEXT), never the worker's."""
    labels: dict[str, str]
    """GCP labels on the repository."""


class Registry(pulumi.ComponentResource):
    """Artifact Registry DOCKER repository, the worker image built and pushed by digest.

    Container Registry (gcr.io) accepts no pushes since March 2025; Artifact Registry replaces it
    and also hosts the gcr.io domains (``repository_id``). Images are referenced by digest, so a pod
    never runs other bytes than the ones this stack built, whatever happens to tags. Tags name what
    docker-build hashes (contract.image), so they change exactly when it rebuilds. Images are built
    on `pulumi up` only: `pulumi preview` needs no Docker daemon.
    """

    repository: gcp.artifactregistry.Repository
    url: pulumi.Output[str]
    worker_image: pulumi.Output[str]
    broker_image: pulumi.Output[str] | None

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:Registry", name, None, opts)

        self.repository = _repository(name, args, self)
        if args.repository_id:
            # A gcr.io-domain repository serves <domain>/<project>/<image>; the project-wide namespace
            # holds other images too, so ours carry the project's name.
            host = args.repository_id
            self.url = pulumi.Output.concat(host, "/", args.project)
            prefix = "ha-celery-"
        else:
            host = f"{args.location}-docker.pkg.dev"
            self.url = pulumi.Output.concat(host, "/", args.project, "/", self.repository.repository_id)
            prefix = ""
        registries = _registries(host, self)
        # `ref` is tag@sha256:digest once pushed: pods pin the exact bytes.
        worker = pulumi.Output.concat(
            self.url, f"/{prefix}worker:", worker_tag(ROOT / args.context_dir, args.platforms)
        )
        self.worker_image = _worker_image(name, args, self, tag=worker, registries=registries).ref
        self.broker_image = None
        if args.mirror_image:
            repo = args.mirror_image.rsplit("/", 1)[-1].split(":", 1)[0]
            tag = pulumi.Output.concat(
                self.url, f"/{prefix}{repo}:", mirror_tag(ROOT, args.mirror_image, args.platforms)
            )
            self.broker_image = _broker_mirror(
                name, args, self, image=args.mirror_image, tag=tag, registries=registries
            ).ref

        outputs: dict[str, pulumi.Input[str]] = {"url": self.url, "worker_image": self.worker_image}
        if self.broker_image is not None:
            outputs["broker_image"] = self.broker_image
        self.register_outputs(outputs)


def _repository(name: str, args: RegistryArgs, parent: Registry) -> gcp.artifactregistry.Repository:
    # Keep the recent images a rollback may need; delete the rest so storage stays flat. Not in a
    # gcr.io repository: it is the whole project's, and the policies would reach others' images.
    cleanup = [
        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="keep-recent",
            action="KEEP",
            most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(keep_count=10),
        ),
        gcp.artifactregistry.RepositoryCleanupPolicyArgs(
            id="delete-old",
            action="DELETE",
            condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(older_than="2592000s"),
        ),
    ]
    return gcp.artifactregistry.Repository(
        name,
        project=args.project,
        location=args.location,
        repository_id=args.repository_id or name,
        format="DOCKER",
        mode="STANDARD_REPOSITORY",
        description="ha-celery worker (and mirrored broker) images",
        docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
        cleanup_policies=None if args.repository_id else cleanup,
        cleanup_policy_dry_run=None if args.repository_id else False,
        # Every pushed image is scanned for known CVEs (Artifact Analysis; the program enables
        # containerscanning.googleapis.com, which INHERITED follows). Findings: `gcloud artifacts
        # docker images describe <image> --show-package-vulnerability`.
        vulnerability_scanning_config=gcp.artifactregistry.RepositoryVulnerabilityScanningConfigArgs(
            enablement_config="INHERITED"
        ),
        labels=args.labels,
        # A gcr.io repository outlives the stack: `pulumi destroy` must not delete the project's
        # gcr.io images (a later `up` then needs `pulumi import`, see docs/images.md).
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=bool(args.repository_id)),
    )


def _registries(host: str, parent: pulumi.Resource) -> list[docker_build.RegistryArgs]:
    # A short-lived OAuth token of whoever runs `pulumi up`: no key file to leak.
    token = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=parent)).access_token
    return [docker_build.RegistryArgs(address=host, username="oauth2accesstoken", password=pulumi.Output.secret(token))]


def _platforms(platforms: ImagePlatforms) -> list[docker_build.Platform]:
    return [docker_build.Platform(p) for p in platforms.platforms]


def _worker_image(
    name: str,
    args: RegistryArgs,
    parent: Registry,
    *,
    tag: pulumi.Output[str],
    registries: list[docker_build.RegistryArgs],
) -> docker_build.Image:
    return docker_build.Image(
        f"{name}-worker",
        context=docker_build.BuildContextArgs(location=args.context_dir),
        dockerfile=docker_build.DockerfileArgs(location=f"{args.context_dir}/{WORKER_DOCKERFILE}"),
        platforms=_platforms(args.platforms),
        tags=[tag],
        push=True,
        # Build (and push) on `pulumi up` only: a preview needs no Docker daemon, and shows the new tag.
        build_on_preview=False,
        registries=registries,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[parent.repository]),
    )


def _broker_mirror(
    name: str,
    args: RegistryArgs,
    parent: Registry,
    *,
    image: str,
    tag: pulumi.Output[str],
    registries: list[docker_build.RegistryArgs],
) -> docker_build.Image:
    return docker_build.Image(
        f"{name}-broker-mirror",
        # Its own context (a two-line Dockerfile): worker changes never rebuild or re-push the broker.
        context=docker_build.BuildContextArgs(location=MIRROR_CONTEXT),
        dockerfile=docker_build.DockerfileArgs(location=f"{MIRROR_CONTEXT}/Dockerfile"),
        build_args={MIRROR_IMAGE_ARG: image},
        platforms=_platforms(args.platforms),
        tags=[tag],
        push=True,
        build_on_preview=False,
        registries=registries,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[parent.repository]),
    )
