# BackupPC 3 (and the BackupPC_ovz drop-in line): per-host config for a VE.
# bpc-ovz writes nothing but the rsync protocol to fds 1 and 2 here; its diagnostics go to the
# log file or syslog named in /etc/bpc-ovz/config.yaml.
$Conf{XferMethod}     = 'rsync';
$Conf{RsyncClientCmd} = '/usr/bin/bpc-ovz server $host $sshPath -q -x -l root $host $rsyncPath $argList+';
# Restores go into the VE (its live root when it runs, its private area when stopped), confined to it.
$Conf{RsyncClientRestoreCmd} = '/usr/bin/bpc-ovz server restore $host $sshPath -q -x -l root $host $rsyncPath $argList+';
$Conf{PingCmd}        = '';
