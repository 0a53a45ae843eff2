# BackupPC 4: per-host config (e.g. /etc/backuppc/pc/ve101.example.com.pl) for a VE backed up
# through bpc-ovz. The tests (tests/backuppc4.rs) use exactly these lines.
$Conf{XferMethod}      = 'rsync';
# bpc-ovz stands in for ssh. rsync_bpc runs it with PATH=/bin:/usr/bin and no other environment.
$Conf{RsyncSshArgs}    = ['-e', '/usr/bin/bpc-ovz ssh --config /etc/bpc-ovz/config.yaml -l root'];
$Conf{RsyncClientPath} = '/usr/bin/rsync';   # ignored by bpc-ovz: the HN's own rsync reads the snapshot
$Conf{RsyncShareName}  = ['/'];
# The VE is not pinged (it may be down for a few seconds, or live on any HN); bpc-ovz finds it.
$Conf{PingCmd}              = '';
$Conf{NmbLookupFindHostCmd} = '';
