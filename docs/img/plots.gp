# Run in this folder: gnuplot plots.gp
set terminal png size 900,520
set key outside right
set grid ytics
set output 'domain_auc.png'
set title 'Test AUC per domain (mean over seeds)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'AUC'
set yrange [*:*]
plot 'domain_auc.dat' using 2:xtic(1) title columnheader, '' using 3 title columnheader, '' using 4 title columnheader, '' using 5 title columnheader
unset style
set style data linespoints
set output 'validation.png'
set title 'Validation AUC per epoch (first seed)'
set xlabel 'epoch'
set ylabel 'validation AUC'
plot for [i=0:14] 'validation.dat' index i using 1:2 with linespoints title columnheader(1)
set output 'gate.png'
set title 'Learned gate weights (rows: domains, columns: experts)'
unset key
set xlabel 'expert'
set ylabel 'domain'
set xtics 1
set ytics 1
set grid noytics
set yrange [] reverse
set cbrange [0:1]
set palette defined (0 'white', 1 'dark-blue')
plot 'gate.dat' matrix with image, '' matrix using 1:2:(sprintf('%.2f', $3)) with labels
