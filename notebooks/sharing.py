"""The sharing API in one namespace: share links (`notebooks.links`), grants
(`notebooks.grants`) and email invitations (`notebooks.invitations`). Every rule they follow is
decided in `notebooks.access`."""

from notebooks.access import Refused as ShareError  # noqa: F401
from notebooks.grants import (  # noqa: F401
    change_role,
    leave,
    remove_grant,
    remove_guest,
    remove_person,
    set_editors_can_share,
    transfer_ownership,
)
from notebooks.invitations import (  # noqa: F401
    INVITATION_DAYS,
    INVITATIONS_PER_HOUR,
    bind_invitations,
    invitation_by_hash,
    invite,
    resend_invitation,
    withdraw_invitation,
)
from notebooks.links import (  # noqa: F401
    LEVELS,
    LINK_GUESSES_PER_IP,
    copy_link,
    create_link,
    general_access,
    note_if_expired,
    open_link,
    renew_general_link,
    replace_link,
    revoke_link,
    set_general_access,
    token_readable,
)
