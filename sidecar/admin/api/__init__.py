"""The admin API's handlers, one module per resource (SPEC §16). Each takes the request and
the `AdminContext`, reads its parameters through `sidecar.admin.params`, and answers JSON;
a 4xx is a `Rejected` the admin server turns into problem+json."""
