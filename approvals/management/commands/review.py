"""manage.py review list|show|approve|deny: held requests from the command line.

    manage.py review list [--state pending|approved|denied|expired|all] [--connection prod] [--json]
    manage.py review show 12 [--json]
    manage.py review approve 12 --by rita [--reason "planned"] [--window 30] [--unmask | --release-token]
    manage.py review deny 12 --by rita --reason "not during the freeze"

``show`` prints what the dashboard shows a reviewer: the request exactly as it will be forwarded
(method, path, query in order, effect headers, masked body and the digest of its real bytes), the
dry-run preview and diff, the votes and the history.  ``approve`` and ``deny`` decide through
approvals.reviews.decide, as the dashboard and the API do: ``--by`` names the Django user voting
(the reviewer role is needed, nobody decides their own request), and the vote covers the review's
exact request, the one ``show`` printed.
"""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import reviews
from approvals.api import ReviewDetailSerializer, ReviewSerializer
from approvals.models import Review, ReviewState, Scope
from approvals.views import query_parameters
from kube.vocabulary import MUTATING_VERBS

MAX_LIST = 500


class Command(BaseCommand):
    help = "List, show, approve or deny held requests (reviews), as the dashboard does."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="List reviews, newest first (default: pending).")
        listing.add_argument("--state", choices=[*ReviewState.values, "all"], default=ReviewState.PENDING)
        listing.add_argument("--connection")
        listing.add_argument("--json", action="store_true", help="The REST API's JSON instead of one line each.")
        show = actions.add_parser("show", help="Everything a reviewer sees of one review.")
        show.add_argument("review_id", type=int)
        show.add_argument("--json", action="store_true", help="The REST API's JSON for the review.")
        approve = actions.add_parser("approve", help="Approve a pending review (one vote).")
        approve.add_argument("review_id", type=int)
        approve.add_argument("--by", required=True, help="The Django user deciding (needs the reviewer role).")
        approve.add_argument("--reason", default="")
        approve.add_argument("--window", type=int, metavar="MINUTES",
                             help="Cover the same verb and object, any body or query, for this many minutes "
                                  "(default: once, exactly this request).")
        choice = approve.add_mutually_exclusive_group()
        choice.add_argument("--unmask", action="store_true", help="Show secret values in the response.")
        choice.add_argument("--release-token", action="store_true",
                            help="A ServiceAccount token request: give the agent the token (without this flag "
                                 "the request is not sent to the cluster and no token is minted).")
        deny = actions.add_parser("deny", help="Deny a pending review (the agent sees the reason).")
        deny.add_argument("review_id", type=int)
        deny.add_argument("--by", required=True, help="The Django user deciding (needs the reviewer role).")
        deny.add_argument("--reason", required=True)

    def handle(self, *args, action, **options):
        if action == "list":
            self.list(options["state"], options["connection"], options["json"])
        elif action == "show":
            review = self.review(options["review_id"])
            self.stdout.write(self.as_json(review) if options["json"] else self.describe(review))
        else:
            self.decide(action, options)

    @staticmethod
    def review(review_id: int) -> Review:
        review = Review.objects.prefetch_related("votes", "events").filter(pk=review_id).first()
        if review is None:
            raise CommandError(f"review {review_id} not found")
        return review

    def list(self, state, connection, as_json):
        rows = Review.objects.prefetch_related("votes")
        if state != "all":
            rows = rows.filter(state=state)
        if connection:
            rows = rows.filter(connection=connection)
        rows = list(rows[:MAX_LIST])
        if as_json:
            self.stdout.write(json.dumps(ReviewSerializer(rows, many=True).data, indent=2, default=str))
            return
        if not rows:
            self.stdout.write("no reviews" if state == "all" else f"no {state} reviews")
        for review in rows:
            approvals = sum(1 for vote in review.votes.all() if vote.approve)
            self.stdout.write(
                f"{review.pk:>6} {review.state:<8} {review.created_at:%Y-%m-%d %H:%M:%S} {review.connection} "
                f"{review.principal_username}: {review.description} "
                f"[rule {review.rule_name}, {approvals}/{review.min_approvals} approvals]"
            )

    @staticmethod
    def as_json(review: Review) -> str:
        return json.dumps(ReviewDetailSerializer(review).data, indent=2, default=str)

    @staticmethod
    def describe(review: Review) -> str:
        """The dashboard's review page as text (approvals/templates/approvals/detail.html)."""
        votes = list(review.votes.all())
        approvals = sum(1 for vote in votes if vote.approve)
        lines = [f"Review {review.pk}: {review.description}"]

        def field(name, value):
            lines.append(f"{name:<11}{value}")

        field("State", f"{review.state} ({approvals}/{review.min_approvals} approvals)"
                       + (f", decided by {review.decided_by}" if review.decided_by else "")
                       + (f": {review.reason}" if review.reason else ""))
        subject = f" ({review.principal_subject})" if review.principal_subject != review.principal_username else ""
        field("Agent", f"{review.principal_username}{subject}, issuer {review.principal_issuer or '-'}, "
                       f"groups {', '.join(review.principal_groups) or 'none'}")
        if review.proxy_username or review.proxy_subject:
            field("Through", f"trusted proxy {review.proxy_username} ({review.proxy_subject}), "
                             f"issuer {review.proxy_issuer or '-'}")
        field("Connection", review.connection)
        if review.origin:
            field("Via", f"{review.origin} (an MCP tool call, sent with the agent's own token)")
        field("Rule", review.rule_name + (f", reviewers from {', '.join(review.reviewer_groups)}"
                                          if review.reviewer_groups else ""))
        field("Asked", review.created_at.isoformat(timespec="seconds"))
        field("Request", f"{review.method} {review.path}{'?' + review.query if review.query else ''} "
                         f"({review.transport}; exactly as it will be forwarded, exec command words masked)")
        for index, (name, value) in enumerate(query_parameters(review.query), 1):
            field("Query" if index == 1 else "", f"{index}. {name} = {value}")
        for index, (name, value) in enumerate(review.headers):
            field("Headers" if index == 0 else "", f"{name}: {value}")
        lines.append(f"Body       {review.get_body_state_display()}")
        if review.body:
            lines.extend("  " + line for line in review.body.splitlines())
        if review.body_sha256:
            field("Digest", f"{review.body_sha256} (HMAC-SHA256 of the exact bytes; an approval covers only them)")
        if review.verb in MUTATING_VERBS:
            lines.append("Effect (server-side dry run)")
            if review.preview_state == "done":
                lines.append(f"  {review.preview_summary}")
                if review.preview_error:
                    lines.append(f"  {review.preview_error}")
                lines.extend("  " + line for line in review.preview_diff.splitlines())
            elif review.preview_state == "pending":
                lines.append("  asking the cluster (dry run)...")
            else:
                lines.append("  no preview for this request")
        refusal = reviews.window_refusal(review)
        field("Approve", f"once only: {refusal}" if refusal else "once (default), or --window MINUTES")
        if review.is_token_request:
            field("Token", "this request mints a ServiceAccount token: approve with --release-token to give it to "
                           "the agent; without it the request is not sent to the cluster and no token is minted")
            if review.state == ReviewState.APPROVED:
                field("", "token released to the agent" if review.release_token else "token withheld")
        for vote in votes:
            what = "approved" if vote.approve else "denied"
            field("Vote", f"{vote.reviewer_name} {what} {vote.created_at.isoformat(timespec='seconds')}"
                          + (f": {vote.reason}" if vote.reason else ""))
        lines.append("History")
        for event in review.events.all():
            by = f" by {event.actor}" if event.actor else ""
            why = f": {event.reason}" if event.reason else ""
            lines.append(f"  {event.at.isoformat(timespec='seconds')} {event.get_kind_display()}{by}{why}")
        return "\n".join(lines)

    def decide(self, action, options):
        user = get_user_model().objects.filter(username=options["by"]).first()
        if user is None:
            raise CommandError(f"no user named {options['by']!r}")
        window = options.get("window")
        try:
            review = reviews.decide(
                options["review_id"], user, approve=action == "approve", reason=options["reason"],
                scope=Scope.WINDOW if window else Scope.ONCE, window_seconds=window * 60 if window else None,
                unmask=options.get("unmask", False), release_token=options.get("release_token", False),
            )
        except reviews.ApprovalError as exc:
            raise CommandError(exc.message) from None
        approvals = sum(1 for vote in review.votes.all() if vote.approve)
        target = f"{review.method} {review.path}{'?' + review.query if review.query else ''}"
        if review.state == ReviewState.PENDING:
            self.stdout.write(f"review {review.pk}: your approval is recorded ({approvals}/{review.min_approvals} "
                              f"approvals); still pending: {target}")
        elif review.state == ReviewState.APPROVED:
            until = review.valid_until.isoformat(timespec="seconds") if review.valid_until else ""
            self.stdout.write(f"review {review.pk} approved ({review.get_scope_display()}, until {until}): {target}")
        else:
            self.stdout.write(f"review {review.pk} denied: {review.reason}")
