// Access-token shapes of other identity providers, for the claims-mapping tests
// (docs/identity-providers.md).  Each takes the payload oidc-provider built
// (iss, aud, iat, exp, jti, sub, client_id, scope) and who the token is for,
// and returns the claims and JOSE header that provider would send.  Only the
// claims differ: the signature is this test provider's own (RS256, its JWKS).
//
// ctx: { account (a person's login, or undefined for client credentials),
//        groups (the client's or the person's groups), profile (the client's
//        per-shape values, below), audience (TOKEN_AUDIENCE) }

const JWT_HEADER = { typ: 'JWT' };

function times(p) {
  return { iat: p.iat, exp: p.exp };
}

function nonEmpty(claims) {
  return Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined));
}

export const SHAPES = {
  // Okta, custom authorization server: ver, cid, scp; for a person uid and sub = login
  // and the groups claim a "Groups" custom claim adds; for a service app sub = client id
  // and no groups (service apps are in no Okta groups).
  // profile: { uid }
  okta(p, { account, groups, profile, audience }) {
    return {
      header: {},
      payload: nonEmpty({
        ver: 1,
        jti: `AT.${p.jti}`,
        iss: p.iss,
        aud: audience,
        ...times(p),
        cid: p.client_id,
        uid: account ? (profile.uid || '00u1example') : undefined,
        scp: (p.scope || '').split(' ').filter(Boolean),
        sub: account || p.client_id,
        groups: account ? groups : undefined,
      }),
    };
  },

  // Microsoft Entra ID, v2.0 access token for an app (client credentials): azp is the
  // calling app, sub and oid its service principal, roles its app roles, groups object
  // IDs; with profile.overage the groups are left out and referenced (_claim_names).
  // profile: { oid, tid, roles, overage }
  entra(p, { groups, profile, audience }) {
    const overage = profile.overage === true;
    return {
      header: JWT_HEADER,
      payload: nonEmpty({
        aud: audience,
        iss: p.iss,
        ...times(p),
        nbf: p.iat,
        azp: p.client_id,
        azpacr: '1',
        idtyp: 'app',
        oid: profile.oid,
        roles: profile.roles,
        groups: overage ? undefined : groups,
        _claim_names: overage ? { groups: 'src1' } : undefined,
        _claim_sources: overage
          ? { src1: { endpoint: `https://graph.microsoft.com/v1.0/servicePrincipals/${profile.oid}/getMemberObjects` } }
          : undefined,
        sub: profile.oid,
        tid: profile.tid,
        uti: p.jti,
        ver: '2.0',
      }),
    };
  },

  // Google: an ID token (Google's access tokens are opaque).  A Workspace user's carries hd;
  // a service account's (generateIdToken with includeEmail) has no hd.  Never a groups claim.
  // profile: { sub, email, hd }
  google(p, { profile, audience }) {
    return {
      header: JWT_HEADER,
      payload: nonEmpty({
        iss: p.iss,
        azp: p.client_id,
        aud: audience,
        sub: profile.sub,
        hd: profile.hd,
        email: profile.email,
        email_verified: true,
        ...times(p),
      }),
    };
  },

  // Keycloak: realm roles under realm_access.roles, client roles under resource_access,
  // groups (the "Group Membership" mapper, full paths on: "/parent/child"), azp the client
  // that asked, preferred_username service-account-<client> for a client's service account.
  // profile: { sub, azp, realm_roles, client_roles }
  keycloak(p, { groups, profile, audience }) {
    const azp = profile.azp || p.client_id;
    return {
      header: JWT_HEADER,
      payload: nonEmpty({
        ...times(p),
        jti: p.jti,
        iss: p.iss,
        aud: audience,
        sub: profile.sub,
        typ: 'Bearer',
        azp,
        acr: '1',
        realm_access: { roles: profile.realm_roles || [] },
        resource_access: profile.client_roles ? { [azp]: { roles: profile.client_roles } } : undefined,
        scope: 'profile email',
        groups,
        preferred_username: `service-account-${p.client_id}`,
        client_id: p.client_id,
      }),
    };
  },

  // Dex: an ID token; aud the gateway's client id (cross-client audience scope), azp the
  // client that asked, groups from the connector, federated_claims naming the connector.
  // profile: { sub, email, name, connector_id, user_id, azp (default: the client id) }
  dex(p, { groups, profile, audience }) {
    return {
      header: {},
      payload: nonEmpty({
        iss: p.iss,
        sub: profile.sub,
        aud: audience,
        ...times(p),
        azp: profile.azp || p.client_id,
        email: profile.email,
        email_verified: true,
        groups,
        name: profile.name,
        federated_claims: profile.connector_id
          ? { connector_id: profile.connector_id, user_id: profile.user_id }
          : undefined,
      }),
    };
  },
};
