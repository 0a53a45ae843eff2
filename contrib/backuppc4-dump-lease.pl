# BackupPC 4 (and 3): one snapshot for the whole dump of a VE with several shares.
# dump-begin takes the snapshot (the only downtime) before the first share and holds it on the HN
# under a lease; every share's transfer reads it; dump-end releases it. If BackupPC dies, the lease
# expires on the HN by itself (lease.ttl in /etc/bpc-ovz/config.yaml) and the HN cleans up.
$Conf{XferMethod}         = 'rsync';
$Conf{RsyncSshArgs}       = ['-e', '/usr/bin/bpc-ovz ssh --config /etc/bpc-ovz/config.yaml -l root'];
$Conf{RsyncClientPath}    = '/usr/bin/rsync';
$Conf{RsyncShareName}     = ['/', '/var/lib/mysql', '/home'];
$Conf{DumpPreUserCmd}     = '/usr/bin/bpc-ovz --config /etc/bpc-ovz/config.yaml dump-begin $host';
$Conf{DumpPostUserCmd}    = '/usr/bin/bpc-ovz --config /etc/bpc-ovz/config.yaml dump-end $host';
$Conf{UserCmdCheckStatus} = 1;   # a failed dump-begin aborts the dump before any transfer
$Conf{PingCmd}              = '';
$Conf{NmbLookupFindHostCmd} = '';
