# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_oauth_sendmail_global_optspecs
    string join \n C/config= h/help V/version
end

function __fish_oauth_sendmail_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_oauth_sendmail_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_oauth_sendmail_using_subcommand
    set -l cmd (__fish_oauth_sendmail_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -s V -l version -d 'Print version'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "send" -d 'Send a message read from stdin, with sendmail\'s options (what `sendmail` runs)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "queue" -d 'Show and manage the messages waiting in the queue'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "log" -d 'Show the delivery log: what was sent, queued, deferred, bounced or failed'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "login" -d 'Log in to an account\'s OAuth2 provider and keep its refresh token'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "logout" -d 'Forget an account\'s tokens (the refresh token in its store and the cached access token)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "status" -d 'Show each account\'s provider, store, tokens and last error (never a secret)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "daemon" -d 'Run the machine-wide mail service (what systemd starts)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "setup" -d 'Write a configuration, log in and send a test message: interactive on a terminal'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "device" -d 'Manage the devices (printers, scanners) that may send through the service\'s relay'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s f -d 'Envelope sender address; "<>" or "" for a null sender (bounces); -r is the same' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s F -d 'Full name of the sender, used when the message has no From header' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s b -d 'Mode: m deliver (default), p list the queue, v verify recipients, i check aliases, s SMTP on stdin/stdout' -r -f -a "m\t'Deliver mail (the default)'
p\t'List the queue'
s\t'Speak SMTP on stdin/stdout'
v\t'Verify recipients without sending'
i\t'Check the aliases'"
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s q -d 'Deliver every queued message now, whatever its retry time (an interval, as in -q30m, is ignored)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s o -d 'Set a sendmail option: -oi is -i; the others (-oem, -odi, -oQ...) are ignored' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s C -l config -d 'Read the configuration from FILE instead of the default locations' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -l account -d 'Send through this account of the configuration' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s B -d 'Body type (7BIT, 8BITMIME): detected from the message instead' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s N -d 'Delivery status notification conditions' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s R -d 'What to return in a bounce (full, hdrs)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s V -d 'Envelope id for delivery status notifications' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s L -d 'Syslog tag' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s X -d 'Traffic log file' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s h -d 'Hop count' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s O -d 'Long-form sendmail option (option=value)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s A -d 'Submission mode (-Ac, -Am)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s t -d 'Read recipients from the To, Cc and Bcc headers (Resent-To/Cc/Bcc when the message has Resent- headers), in addition to those on the command line'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s i -d 'Read the message until end of input: a line holding only "." does not end it'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s v -d 'Print the SMTP dialogue on stderr (secrets are redacted)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -l dry-run -d 'Print the envelope and the message as they would be sent; send nothing'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -l version -d 'Print version'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s G -d 'Relay (gateway) submission'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s U -d 'Initial user submission'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s n -d 'Do not expand aliases (aliases are configured, not system-wide)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand send" -s m -d 'Also send to the sender when in an alias expansion'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "list" -d 'List the queued messages (what mailq shows)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "show" -d 'Show one queued message: its state, then its text (a quarantined one: why)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "retry" -d 'Try messages again now, whatever their retry time'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "remove" -d 'Remove messages from the queue without sending them'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "flush" -d 'Deliver the messages whose retry time has come, as a timer does (sendmail -q and queue retry --all deliver every message now)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and not __fish_seen_subcommand_from list show retry remove flush help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from list" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from show" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from retry" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from retry" -l all -d 'Every queued message'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from retry" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from remove" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from remove" -l all -d 'Every queued message (those being delivered right now are left)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from flush" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from flush" -s v -l verbose -d 'Print the SMTP dialogue on stderr (secrets are redacted)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from flush" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the queued messages (what mailq shows)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one queued message: its state, then its text (a quarantined one: why)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "retry" -d 'Try messages again now, whatever their retry time'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove messages from the queue without sending them'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "flush" -d 'Deliver the messages whose retry time has come, as a timer does (sendmail -q and queue retry --all deliver every message now)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand log" -l since -d 'Only attempts newer than this: 30m, 12h, 1d, 2w' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand log" -l status -d 'Only attempts with this result' -r -f -a "sent\t'The server accepted it'
queued\t'It could not go now and waits in the queue'
deferred\t'A queued message was tried again and must wait more'
bounced\t'Given up: the sender was (or could not be) told'
failed\t'Refused for good and not queued; the caller got an error'
partial\t'A message\'s result only: some recipients got it and some did not (each recipient\'s own status says which)'
quarantined\t'A queue entry that could not be read, moved aside to `corrupt/`'"
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand log" -l format -d 'Output format: a table to read, CSV for a spreadsheet, JSON Lines for scripts' -r -f -a "table\t''
csv\t''
json\t''"
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand log" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l account -d 'The account to log in (default: the configuration\'s default account)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -s C -l config -d 'Read the configuration from FILE instead of the default locations' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l port -d 'Listen for the browser\'s redirect on this port of 127.0.0.1 (default: a random one); fix it to forward it with ssh -L PORT:127.0.0.1:PORT' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l timeout -d 'Give up after this many seconds without an answer' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l no-browser -d 'Open no browser: print the address, then take the address the browser was sent to, pasted on stdin (or the redirect on the loopback port, e.g. through ssh -L)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l device -d 'Log in with a code entered on any other device (Microsoft; Google refuses it for Gmail)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -l client-secret-stdin -d 'Read the OAuth client secret from the first line of stdin and keep it in the account\'s store, instead of in the configuration file'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand login" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand logout" -l account -d 'The account whose tokens to forget (default: the configuration\'s default account)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand logout" -s C -l config -d 'Read the configuration from FILE instead of the default locations' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand logout" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -l account -d 'Show only this account' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -s C -l config -d 'Read the configuration from FILE instead of the default locations' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -l check -d 'For monitoring: a one-line verdict first, a login to each account\'s server or API (sending nothing), and exit 0 OK, 1 WARNING, 2 CRITICAL as a Nagios plugin'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -l json -d 'Print the state as one JSON object (mode, accounts, queue, last error)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -s v -d 'With --check: print the SMTP dialogue or HTTP exchange on stderr (secrets redacted)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand status" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand daemon" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -s C -l config -d 'Write the configuration to FILE (default: /etc/oauth-sendmail/config.toml as root, the one read by every caller; else ~/.config/oauth-sendmail/config.toml)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l provider -d 'The mail provider' -r -f -a "gmail\t'Gmail or Google Workspace (smtp.gmail.com)'
outlook\t'Microsoft 365 or Outlook.com (smtp.office365.com)'
custom\t'Any other SMTP server with OAuth2 (give --host, --auth-uri and --token-uri)'"
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l address -d 'The account\'s address: its login and the envelope sender of every message' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l account -d 'The account\'s name in the configuration (default: the provider\'s name)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l client-id -d 'The OAuth client id (from Google Cloud or the Entra admin center; see the README)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l service-account -d 'A Google service account\'s JSON key file (domain-wide delegation: no client, no login)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l tenant -d 'Microsoft: the directory (tenant) id or domain (default: common)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l store -d 'Where the refresh token is kept (default: a file for the system, else the keyring)' -r -f -a "keyring\t'The desktop keyring (Secret Service)'
file\t'A file of mode 0600 in the state directory'"
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l domain -d 'Domain for unqualified recipients such as cron\'s "root" (default: the address\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l root-alias -d 'Where mail to root goes (default: the account\'s address)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l test-to -d 'Send a test message to ADDRESS once logged in' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l host -d 'The SMTP server (default: the provider\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l port -d 'The SMTP server\'s port (default: the provider\'s, or 587)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l ca-file -d 'An extra CA certificate (PEM) to trust for the SMTP server' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l auth-uri -d 'The provider\'s authorization endpoint (default: the provider\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l token-uri -d 'The provider\'s token endpoint (default: the provider\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l scopes -d 'The OAuth scopes to ask for, separated by spaces (default: the provider\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l non-interactive -d 'Ask nothing: every answer comes from the flags (the default when stdin is not a terminal)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l client-secret-stdin -d 'Read the OAuth client secret from the first line of stdin (never from the command line, where others could see it); kept in a file of mode 0600 beside the configuration'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l no-login -d 'Write the configuration only: no login, no test message'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l force -d 'Replace a configuration that already has accounts'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l device -d 'Log in with a code entered on any other device (Microsoft)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -l no-browser -d 'Open no browser at login: print the address and take the redirect pasted on stdin'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand setup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Add a device and print its generated password, once (only its verifier is kept)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'List the devices, their networks, senders and accounts (never a password)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'Remove a device: it can no longer send'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from add" -l network -d 'Also (or, without a password, only) the addresses it may send from, as CIDR' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from add" -l sender -d 'The one address its mail goes out as (default: the account\'s)' -r
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from add" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from add" -l no-password -d 'No password: it sends from --network without logging in (for a device that cannot do SMTP AUTH)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from list" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from remove" -s C -l config -d 'Read the configuration from FILE instead of the default locations (before or after the command\'s name)' -r -F
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a device and print its generated password, once (only its verifier is kept)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the devices, their networks, senders and accounts (never a password)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a device: it can no longer send'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand device; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "send" -d 'Send a message read from stdin, with sendmail\'s options (what `sendmail` runs)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "queue" -d 'Show and manage the messages waiting in the queue'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "log" -d 'Show the delivery log: what was sent, queued, deferred, bounced or failed'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "login" -d 'Log in to an account\'s OAuth2 provider and keep its refresh token'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "logout" -d 'Forget an account\'s tokens (the refresh token in its store and the cached access token)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "status" -d 'Show each account\'s provider, store, tokens and last error (never a secret)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "daemon" -d 'Run the machine-wide mail service (what systemd starts)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "setup" -d 'Write a configuration, log in and send a test message: interactive on a terminal'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "device" -d 'Manage the devices (printers, scanners) that may send through the service\'s relay'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and not __fish_seen_subcommand_from send queue log login logout status daemon setup device help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "list" -d 'List the queued messages (what mailq shows)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "show" -d 'Show one queued message: its state, then its text (a quarantined one: why)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "retry" -d 'Try messages again now, whatever their retry time'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "remove" -d 'Remove messages from the queue without sending them'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "flush" -d 'Deliver the messages whose retry time has come, as a timer does (sendmail -q and queue retry --all deliver every message now)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "add" -d 'Add a device and print its generated password, once (only its verifier is kept)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "list" -d 'List the devices, their networks, senders and accounts (never a password)'
complete -c oauth-sendmail -n "__fish_oauth_sendmail_using_subcommand help; and __fish_seen_subcommand_from device" -f -a "remove" -d 'Remove a device: it can no longer send'
