"""The HA invariants as a Pulumi policy pack: `pulumi preview --policy-pack policy`.

``validators`` holds each invariant as a plain function over resource types and property
mappings (no Pulumi engine, testable offline against ``build/plan``); ``pack`` wraps them as
``pulumi_policy`` policies; ``__main__`` serves them as the pack the Pulumi CLI runs.
"""
