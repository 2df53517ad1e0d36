"""Registry: an Artifact Registry Docker repository with the worker image pushed into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from contract.image import source_tag

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RegistryArgs:
    project: str
    """GCP project id."""
    location: str
    """Region of the repository: the cluster's, so pulls stay in-region."""
    context_dir: str
    """Build context of the worker image: the project root, relative (so state does not depend on
    where the project is checked out); app/Dockerfile.dockerignore admits only WORKER_SOURCES."""
    mirror_image: str | None
    """A public image (the broker's) to copy into the repository for clusters without internet
    egress, or None."""
    labels: dict[str, str]
    """GCP labels on the repository."""


class Registry(pulumi.ComponentResource):
    """Artifact Registry DOCKER repository, the worker image built and pushed by digest.

    Container Registry (gcr.io) accepts no pushes since March 2025; Artifact Registry
    replaces it. Images are referenced by digest, so a pod never runs other bytes than
    the ones this stack built, whatever happens to tags.
    """

    repository: gcp.artifactregistry.Repository
    url: pulumi.Output[str]
    worker_image: pulumi.Output[str]
    broker_image: pulumi.Output[str] | None

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ha-celery:index:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.repository = _repository(name, args, child)
        host = f"{args.location}-docker.pkg.dev"
        self.url = pulumi.Output.concat(host, "/", args.project, "/", self.repository.repository_id)
        registries = _registries(host, self)
        # `ref` is tag@sha256:digest once pushed: pods pin the exact bytes.
        self.worker_image = _worker_image(name, args, self, url=self.url, registries=registries).ref
        self.broker_image = None
        if args.mirror_image:
            mirror = _broker_mirror(name, args, self, image=args.mirror_image, url=self.url, registries=registries)
            self.broker_image = mirror.ref

        outputs: dict[str, pulumi.Input[str]] = {"url": self.url, "worker_image": self.worker_image}
        if self.broker_image is not None:
            outputs["broker_image"] = self.broker_image
        self.register_outputs(outputs)


def _repository(name: str, args: RegistryArgs, child: pulumi.ResourceOptions) -> gcp.artifactregistry.Repository:
    return gcp.artifactregistry.Repository(
        name,
        project=args.project,
        location=args.location,
        repository_id=name,
        format="DOCKER",
        mode="STANDARD_REPOSITORY",
        description="ha-celery worker (and mirrored broker) images",
        docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
        # Keep the recent images a rollback may need; delete the rest so storage stays flat.
        cleanup_policies=[
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
        ],
        cleanup_policy_dry_run=False,
        labels=args.labels,
        opts=child,
    )


def _registries(host: str, parent: pulumi.Resource) -> list[docker_build.RegistryArgs]:
    # A short-lived OAuth token of whoever runs `pulumi up`: no key file to leak.
    token = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=parent)).access_token
    return [docker_build.RegistryArgs(address=host, username="oauth2accesstoken", password=pulumi.Output.secret(token))]


def _worker_image(
    name: str,
    args: RegistryArgs,
    parent: Registry,
    *,
    url: pulumi.Output[str],
    registries: list[docker_build.RegistryArgs],
) -> docker_build.Image:
    tag = source_tag(ROOT / args.context_dir)
    return docker_build.Image(
        f"{name}-worker",
        context=docker_build.BuildContextArgs(location=args.context_dir),
        dockerfile=docker_build.DockerfileArgs(location=f"{args.context_dir}/app/Dockerfile"),
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[pulumi.Output.concat(url, "/worker:", tag)],
        push=True,
        registries=registries,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[parent.repository]),
    )


def _broker_mirror(
    name: str,
    args: RegistryArgs,
    parent: Registry,
    *,
    image: str,
    url: pulumi.Output[str],
    registries: list[docker_build.RegistryArgs],
) -> docker_build.Image:
    return docker_build.Image(
        f"{name}-broker-mirror",
        # An inline FROM needs no files: the smallest folder of the project as context.
        context=docker_build.BuildContextArgs(location=f"{args.context_dir}/contract"),
        dockerfile=docker_build.DockerfileArgs(inline=f"FROM {image}\n"),
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[pulumi.Output.concat(url, "/", image.rsplit("/", 1)[-1])],
        push=True,
        registries=registries,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[parent.repository]),
    )
